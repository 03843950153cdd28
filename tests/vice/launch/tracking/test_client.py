"""MLflow calls retry while SQLite says the database is locked: bounded, backing off, logged."""

from __future__ import annotations

import logging

import pytest

from vice.launch.tracking import client
from vice.launch.tracking.client import LOCK_RETRIES, with_retry


class Locked:
    """An MLflow call that finds the database locked ``times`` times, then answers."""

    def __init__(self, times: int) -> None:
        self.times, self.calls = times, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.times:
            raise RuntimeError("(sqlite3.OperationalError) database is locked")
        return "written"


@pytest.fixture(autouse=True)
def _no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    waits: list[float] = []
    monkeypatch.setattr(client.time, "sleep", waits.append)
    return waits


def test_a_locked_write_is_retried_with_growing_waits_and_each_retry_is_logged(
    caplog: pytest.LogCaptureFixture, _no_sleep: list[float]
) -> None:
    call = Locked(3)
    with caplog.at_level(logging.WARNING, logger=client.__name__):
        assert with_retry(call) == "written"
    assert call.calls == 4 and len(_no_sleep) == 3
    assert [r.getMessage().split(";")[0] for r in caplog.records] == [
        f"MLflow store: database is locked (try {i} of {LOCK_RETRIES})" for i in (1, 2, 3)
    ]
    assert 0.25 <= _no_sleep[0] <= 0.75 and 1.0 <= _no_sleep[2] <= 3.0


def test_retries_are_bounded_and_other_errors_are_not_retried() -> None:
    always = Locked(LOCK_RETRIES)
    with pytest.raises(RuntimeError, match="database is locked"):
        with_retry(always)
    assert always.calls == LOCK_RETRIES

    def broken() -> None:
        raise ValueError("no such run")

    with pytest.raises(ValueError, match="no such run"):
        with_retry(broken)
