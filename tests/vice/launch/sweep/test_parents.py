"""Stale sweep parent runs on a real SQLite store: a killed vice-sweep's (a real process holding the
lock, then SIGKILLed), and a parent whose killed job a later sweep resumed to the end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for

from vice.launch.sweep.parents import (
    CLOSED_REASON_TAG,
    DRIVER_LOCK_FILE,
    DRIVER_LOCK_TAG,
    close_stale_parents,
    driver_alive,
)
from vice.launch.tracking.client import mlflow_client, resolve_tracking_uri
from vice.launch.tracking.write import end_run, open_run, prepare_tracking, start_parent_run

HOLD_LOCK = (
    "import sys, time; from pathlib import Path; from vice.launch.sweep.parents import hold_driver_lock; "
    "lock = hold_driver_lock(Path(sys.argv[1])); print('held', flush=True); time.sleep(600)"
)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    monkeypatch.setenv("VICE_GIT_COMMIT", "abc123")
    uri = resolve_tracking_uri(None, tmp_path)
    return uri, prepare_tracking(uri, "table3_decomposition_smoke")


def _job(uri: str, run_dir: Path, sweep_id: str, parent: str, status: str) -> str:
    logger = open_run(
        uri,
        "table3_decomposition_smoke",
        run_dir,
        parent_run_id=parent,
        tags={"run_key": run_dir.name, "sweep_id": sweep_id},
    )
    logger.close(status)
    return logger.run_id


def _run(uri: str, run_id: str) -> Any:
    return mlflow_client(uri).get_run(run_id)


def test_a_killed_vice_sweeps_parent_is_closed_by_the_next_invocation_and_a_live_ones_is_not(
    store: tuple[str, str], tmp_path: Path
) -> None:
    uri, experiment_id = store
    sweep_dir = tmp_path / "sweeps" / "s1"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(sweep_dir)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        lock = sweep_dir / DRIVER_LOCK_FILE
        parent = start_parent_run(uri, experiment_id, "s1", tags={DRIVER_LOCK_TAG: str(lock)})
        _job(uri, tmp_path / "runs" / "k1", "s1", parent, "FINISHED")
        _job(uri, tmp_path / "runs" / "k2", "s1", parent, "KILLED")
        assert driver_alive(str(lock))
        assert close_stale_parents(uri, experiment_id, "s2") == []
        assert _run(uri, parent).info.status == "RUNNING"
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    wait_for(lambda: not driver_alive(str(lock)), "the lock to be free", 30, 0.1)
    (closed,) = close_stale_parents(uri, experiment_id, "s2")
    run = _run(uri, parent)
    assert (closed.run_id, closed.status, run.info.status) == (parent, "KILLED", "KILLED")
    assert (
        run.data.tags[CLOSED_REASON_TAG]
        == "its vice-sweep ended without closing it (killed); closed by sweep s2"
    )
    assert close_stale_parents(uri, experiment_id, "s3") == []


def test_a_failed_parent_whose_jobs_a_later_sweep_finished_is_finished_and_others_stay(
    store: tuple[str, str], tmp_path: Path
) -> None:
    uri, experiment_id = store
    first = start_parent_run(uri, experiment_id, "s1")
    _job(uri, tmp_path / "runs" / "a", "s1", first, "FINISHED")
    _job(uri, tmp_path / "runs" / "b", "s1", first, "KILLED")
    end_run(uri, first, "FAILED")
    other = start_parent_run(uri, experiment_id, "s0")
    _job(uri, tmp_path / "runs" / "c", "s0", other, "FAILED")
    end_run(uri, other, "FAILED")
    assert close_stale_parents(uri, experiment_id, "s2") == []  # job b is not finished yet

    second = start_parent_run(uri, experiment_id, "s2")
    resumed = _job(uri, tmp_path / "runs" / "b", "s2", second, "FINISHED")
    assert _run(uri, resumed).data.tags["mlflow.parentRunId"] == second
    end_run(uri, second, "FINISHED")
    (closed,) = close_stale_parents(uri, experiment_id, "s2")
    assert (closed.run_id, closed.status) == (first, "FINISHED")
    assert _run(uri, first).info.status == "FINISHED" and _run(uri, other).info.status == "FAILED"
    assert _run(uri, first).data.tags[CLOSED_REASON_TAG] == (
        "ended FAILED; every job of it finished since, resumed by a later sweep (closed by s2)"
    )
