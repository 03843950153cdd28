"""The driver's MLflow writes survive a locked SQLite store (real store, a lock on its first writes)."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from vice.launch.tracking import client as tracking_client
from vice.launch.tracking.client import mlflow_client, resolve_tracking_uri
from vice.launch.tracking.write import prepare_tracking, start_parent_run
from vice.launch.tune import driver


class LockedFirst:
    """A real MLflow client whose first ``times`` writes find the database locked."""

    def __init__(self, real: Any, times: int) -> None:
        self.real, self.times = real, times

    def log_batch(self, *args: Any, **kwargs: Any) -> Any:
        if self.times > 0:
            self.times -= 1
            raise RuntimeError("(sqlite3.OperationalError) database is locked")
        return self.real.log_batch(*args, **kwargs)


def test_the_drivers_tag_write_retries_a_locked_store_and_logs_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("VICE_GIT_COMMIT", "abc123")
    monkeypatch.setattr(tracking_client.time, "sleep", lambda s: None)
    uri = resolve_tracking_uri(None, tmp_path)
    run_id = start_parent_run(uri, prepare_tracking(uri, "tune_x"), "tune_x")
    locked = LockedFirst(mlflow_client(uri), times=2)
    monkeypatch.setattr(driver, "mlflow_client", lambda _uri: locked)
    session = SimpleNamespace(name="tune_x", tracking_uri=uri)
    with caplog.at_level(logging.WARNING, logger=tracking_client.__name__):
        driver._tag_run(session, run_id, 3, {"optim.base_lr": 0.5}, "COMPLETE")  # type: ignore[arg-type]
    tags = mlflow_client(uri).get_run(run_id).data.tags
    assert (tags["optuna.trial"], tags["optuna.state"], tags["optuna.param.optim.base_lr"]) == (
        "3",
        "COMPLETE",
        "0.5",
    )
    assert locked.times == 0 and sum("database is locked" in r.getMessage() for r in caplog.records) == 2
