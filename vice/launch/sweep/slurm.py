"""SLURM: is a cluster there, and is the job of a run MLflow shows RUNNING still alive?"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from vice.launch.sweep.state import RunState

log = logging.getLogger(__name__)


SINFO_TIMEOUT_S = 3

USABLE_NODE_STATES = ("idle", "mix", "alloc")

#: SLURM job states after which a job never runs again (sacct and squeue spell them alike). Every
#: other state (PENDING, RUNNING, REQUEUED, SUSPENDED, a held requeue, ...) counts as alive, so that
#: an unfamiliar state never gets a live job submitted twice.
SLURM_ENDED_STATES = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "REVOKED",
        "TIMEOUT",
    }
)

#: What the plan says of a SLURM job that neither squeue nor sacct knows.
SLURM_UNKNOWN_JOB = "unknown to SLURM"

SLURM_QUERY_TIMEOUT_S = 60


def slurm_available() -> bool:
    """True when ``sinfo`` answers within :data:`SINFO_TIMEOUT_S` with a usable node."""
    if shutil.which("sinfo") is None:
        return False
    try:
        probe = subprocess.run(
            ["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=SINFO_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        return False
    return probe.returncode == 0 and any(s.rstrip("*~#") in USABLE_NODE_STATES for s in probe.stdout.split())


def slurm_job_id(tags: Mapping[str, str]) -> str | None:
    """The SLURM job of a run, as squeue and sacct name it: ``<array>_<task>`` for an array task.

    An array task's ``SLURM_JOB_ID`` (the ``slurm_job_id`` tag) can equal the array's own id, which
    sacct expands to every task, so the array id wins.
    """
    return tags.get("slurm_array_id") or tags.get("slurm_job_id")


def parse_job_states(output: str) -> dict[str, str]:
    """Job id -> state from ``sacct -n -X -P -o JobID,State`` or ``squeue -h -o %i|%T`` output.

    ``CANCELLED by 1000`` becomes ``CANCELLED``; when an id is listed twice (sacct after the controller's
    job ids restarted), the last line, the newest job, wins.
    """
    states = {}
    for line in output.splitlines():
        job_id, sep, state = line.partition("|")
        if sep and job_id.strip() and state.split():
            states[job_id.strip()] = state.split()[0]
    return states


def slurm_job_alive(state: str) -> bool:
    """True unless ``state`` says the job ended for good (:data:`SLURM_ENDED_STATES`, or unknown to SLURM)."""
    return state != SLURM_UNKNOWN_JOB and state not in SLURM_ENDED_STATES


class SlurmQueryError(RuntimeError):
    """Neither squeue nor sacct answered."""


def _slurm_command(command: list[str]) -> tuple[dict[str, str], str | None]:
    """Run a SLURM query; its parsed states, or the reason it gave none."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=SLURM_QUERY_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as error:
        return {}, f"{command[0]}: {error}"
    if done.returncode != 0:
        reason = done.stderr.strip() or f"exit status {done.returncode}"
        return {}, reason if reason.startswith(command[0]) else f"{command[0]}: {reason}"
    return parse_job_states(done.stdout), None


def query_slurm_states(job_ids: Sequence[str]) -> dict[str, str]:
    """What SLURM says of each job: the controller's state (squeue), else the accounting's (sacct).

    The controller knows every queued and running job (and those that ended in the last
    ``MinJobAge``); accounting knows every job, but may lag behind it.

    Returns:
        Job id -> state for the jobs SLURM knows.

    Raises:
        SlurmQueryError: neither command answered.
    """
    ids = ",".join(job_ids)
    queued, queue_error = _slurm_command(["squeue", "-h", "--states=all", "-o", "%i|%T", "-j", ids])
    if queue_error is not None and "Invalid job id" in queue_error:  # none of them is in the controller
        queue_error = None
    accounted, acct_error = _slurm_command(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ids])
    if queue_error is not None and acct_error is not None:
        raise SlurmQueryError(f"{queue_error}; {acct_error}")
    return {**accounted, **queued}


def check_slurm(
    states: Mapping[str, RunState], query: Callable[[Sequence[str]], dict[str, str]] = query_slurm_states
) -> dict[str, RunState]:
    """Ask SLURM about every run MLflow shows RUNNING that ran as a SLURM job.

    A job killed without cleanup (SIGKILL, out of memory, node failure) leaves its run RUNNING for good;
    SLURM knows it ended. Runs without SLURM tags (local launcher) stay as they are.

    Args:
        states: :func:`fetch_states`'s run key -> state.
        query: job ids -> SLURM states (:func:`query_slurm_states`).

    Returns:
        ``states`` with ``slurm_state`` set on those runs (:data:`SLURM_UNKNOWN_JOB` for a job SLURM does
        not know); unchanged, with a warning, when SLURM does not answer.
    """
    asked = {
        key: job_id
        for key, state in states.items()
        if state.status == "RUNNING" and (job_id := slurm_job_id(state.tags)) is not None
    }
    if not asked:
        return dict(states)
    try:
        found = query(sorted(set(asked.values())))
    except SlurmQueryError as error:
        log.warning("could not ask SLURM whether %d running job(s) are alive: %s", len(asked), error)
        return dict(states)
    checked = dict(states)
    for key, job_id in asked.items():
        checked[key] = replace(states[key], slurm_state=found.get(job_id, SLURM_UNKNOWN_JOB))
    return checked
