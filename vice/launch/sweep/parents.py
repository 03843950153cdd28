"""Parent runs no process will close: a killed ``vice-sweep``'s, and those a later sweep finished.

Each ``vice-sweep`` holds a lock file in its sweep dir (:func:`hold_driver_lock`) for as long as it runs
and names it in its parent run's :data:`DRIVER_LOCK_TAG`; the kernel drops the lock when the process
dies, however it dies. The next invocation (:func:`close_stale_parents`) closes:

- a RUNNING parent whose lock is free (or that names none: logged before the lock existed): its
  ``vice-sweep`` was killed; FINISHED when all its jobs finished since, else KILLED;
- a FAILED or KILLED parent all of whose jobs finished since, resumed by later sweeps: FINISHED.

Either gets a :data:`CLOSED_REASON_TAG` saying why. A job belongs to every sweep in its ``sweep_ids``
tag (:func:`vice.launch.tracking.identity.sweep_ids_of`).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from vice.io import LockHeldError, lock_file
from vice.launch.tracking.identity import sweep_ids_of
from vice.launch.tracking.names import RUN_KEY_TAG

#: The lock file a running ``vice-sweep`` holds in its sweep dir.
DRIVER_LOCK_FILE = "vice-sweep.lock"
#: Parent-run tag naming that lock file.
DRIVER_LOCK_TAG = "driver_lock"
#: Tag saying why a later invocation closed a parent run.
CLOSED_REASON_TAG = "closed_reason"
#: Parent statuses a later sweep may turn FINISHED once every job of the parent finished.
UNFINISHED_ENDS = ("FAILED", "KILLED")


def hold_driver_lock(sweep_dir: Path) -> IO[str]:
    """Take this ``vice-sweep``'s lock in ``sweep_dir`` (held until the returned file is closed).

    Raises:
        LockHeldError: another live ``vice-sweep`` runs the same sweep.
    """
    return lock_file(sweep_dir / DRIVER_LOCK_FILE, f"vice-sweep pid {os.getpid()} on {socket.gethostname()}")


def driver_alive(lock_path: str | None) -> bool:
    """True when the ``vice-sweep`` that wrote ``lock_path`` still holds it; False for None or no file."""
    if not lock_path or not Path(lock_path).is_file():
        return False
    try:
        lock_file(lock_path, "vice-sweep checking a stale parent run").close()
    except LockHeldError:
        return True
    return False


@dataclass(frozen=True)
class Closing:
    """A parent run to close: its id, the status to set and why."""

    run_id: str
    status: str
    reason: str


def sweep_jobs_finished(sweep_id: str, jobs: Sequence[Any]) -> bool:
    """True when the sweep has jobs and each run that belonged to it is FINISHED now."""
    mine = [j for j in jobs if sweep_id in sweep_ids_of(j.data.tags)]
    return bool(mine) and all(j.info.status == "FINISHED" for j in mine)


def stale_parents(
    parents: Sequence[Any], jobs: Sequence[Any], current: str, alive: Mapping[str, bool]
) -> list[Closing]:
    """The parent runs of other sweeps that must be closed, and how (see the module docstring).

    Args:
        parents: the experiment's parent runs (no ``run_key`` tag).
        jobs: its job runs.
        current: this invocation's sweep id (its parent is left alone).
        alive: parent run id -> whether its ``vice-sweep`` still holds its lock (:func:`driver_alive`).

    Returns:
        One :class:`Closing` per parent to close.
    """
    closing = []
    for parent in parents:
        sweep_id = parent.data.tags.get("sweep_id")
        if sweep_id is None or sweep_id == current:
            continue
        done = sweep_jobs_finished(sweep_id, jobs)
        status = parent.info.status
        run_id = str(parent.info.run_id)
        if status == "RUNNING" and not alive.get(run_id, False):
            reason = f"its vice-sweep ended without closing it (killed); closed by sweep {current}"
            closing.append(Closing(run_id, "FINISHED" if done else "KILLED", reason))
        elif status in UNFINISHED_ENDS and done:
            reason = f"ended {status}; every job of it finished since, resumed by a later sweep (closed by {current})"
            closing.append(Closing(run_id, "FINISHED", reason))
    return closing


def close_stale_parents(tracking_uri: str, experiment_id: str, current: str) -> list[Closing]:
    """Close the experiment's stale parent runs (:func:`stale_parents`); returns what was closed."""
    from vice.launch.tracking.client import mlflow_client, with_retry
    from vice.launch.tracking.read import all_runs
    from vice.launch.tracking.write import end_run, run_logger

    client = mlflow_client(tracking_uri)
    runs = with_retry(lambda: all_runs(client, experiment_id))
    parents = [r for r in runs if RUN_KEY_TAG not in r.data.tags]
    jobs = [r for r in runs if RUN_KEY_TAG in r.data.tags]
    alive = {
        str(p.info.run_id): driver_alive(p.data.tags.get(DRIVER_LOCK_TAG))
        for p in parents
        if p.info.status == "RUNNING"
    }
    closing = stale_parents(parents, jobs, current, alive)
    for close in closing:
        run_logger(tracking_uri, close.run_id).set_tags({CLOSED_REASON_TAG: close.reason})
        end_run(tracking_uri, close.run_id, close.status)
    return closing
