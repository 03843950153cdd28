"""SLURM: is a cluster there, and is the job of a run MLflow shows RUNNING still alive?"""

from __future__ import annotations

import json
import logging
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from vice.io import atomic_write_text
from vice.launch.sweep.state import RunState

log = logging.getLogger(__name__)


SINFO_TIMEOUT_S = 3

USABLE_NODE_STATES = ("idle", "mix", "alloc")

#: Node states that pass: a node still completing the jobs just cancelled or ended (``comp``) is idle
#: seconds later. ``--launcher auto`` waits for it instead of concluding that SLURM is unusable.
COMPLETING_NODE_STATES = ("comp",)
COMPLETING_WAIT_S = 120.0
COMPLETING_POLL_S = 2.0
#: What sinfo appends to a state (``idle*``: not responding, ``~``: powered off, ``#``: powering up, ...).
NODE_STATE_SUFFIXES = "*~#!%$@^-"


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


def sinfo_states() -> list[str] | None:
    """The state of every node, as ``sinfo -h -o %t`` prints it without suffixes; None when sinfo does not answer."""
    if shutil.which("sinfo") is None:
        return None
    try:
        probe = subprocess.run(
            ["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=SINFO_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        return None
    if probe.returncode != 0:
        return None
    return [state.rstrip(NODE_STATE_SUFFIXES) for state in probe.stdout.split()]


def slurm_available(
    wait_s: float = COMPLETING_WAIT_S,
    poll_s: float = COMPLETING_POLL_S,
    probe: Callable[[], list[str] | None] = sinfo_states,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """True when ``sinfo`` answers with a usable node, waiting for nodes that are still completing.

    Args:
        wait_s: how long to wait while the only nodes are completing (:data:`COMPLETING_NODE_STATES`);
            after that SLURM counts as available all the same (its jobs queue until the node is idle).
        poll_s: seconds between two ``sinfo`` calls while waiting.
        probe: the node states (:func:`sinfo_states`).
        sleep: how to wait.

    Returns:
        False when sinfo does not answer or no node is usable or completing (down, drained, none).
    """
    waited = 0.0
    while True:
        states = probe()
        if states is None:
            return False
        if any(s in USABLE_NODE_STATES for s in states):
            return True
        if not any(s in COMPLETING_NODE_STATES for s in states):
            return False
        if waited >= wait_s:
            log.warning(
                "SLURM nodes still completing after %.0f s: using SLURM, jobs queue until a node is idle",
                waited,
            )
            return True
        if waited == 0:
            log.warning("SLURM nodes are completing (%s): waiting for one to be idle", ", ".join(states))
        sleep(poll_s)
        waited += poll_s


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


def _slurm_output(command: list[str]) -> tuple[str, str | None]:
    """Run a SLURM query; its output, or the reason it gave none."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=SLURM_QUERY_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as error:
        return "", f"{command[0]}: {error}"
    if done.returncode != 0:
        reason = done.stderr.strip() or f"exit status {done.returncode}"
        return "", reason if reason.startswith(command[0]) else f"{command[0]}: {reason}"
    return done.stdout, None


def _slurm_command(command: list[str]) -> tuple[dict[str, str], str | None]:
    """Run a SLURM query; its parsed states, or the reason it gave none."""
    output, error = _slurm_output(command)
    return parse_job_states(output), error


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


#: File in a job's run dir naming the SLURM job last submitted for it (:class:`SlurmRecord`).
SLURM_RECORD_FILE = "slurm_job.json"
#: ``squeue -o`` and ``sacct -o`` fields of :class:`SlurmRecord`, in its order after the job id.
SQUEUE_FIELDS = "%i|%T|%j|%u|%V"
SACCT_FIELDS = "JobID,State,JobName,User,Submit"


@dataclass(frozen=True)
class SlurmRecord:
    """A SLURM job as ``vice-sweep`` recorded it at submission, or as SLURM describes it now.

    Attributes:
        job_id: ``<array>_<task>``.
        name: the job name (unique per launch: :func:`launch_job_name`).
        user: who submitted it.
        submit_time: SLURM's submit time, ``2026-12-06T04:11:03``.
        state: SLURM's state when read (PENDING, RUNNING, ...).
    """

    job_id: str
    name: str
    user: str
    submit_time: str
    state: str = ""


def launch_job_name(experiment: str, sweep_id: str) -> str:
    """A SLURM job name no other launch shares: the experiment, the sweep, a random suffix."""
    return f"{experiment}.{sweep_id}.{secrets.token_hex(3)}"


def parse_slurm_records(output: str) -> dict[str, SlurmRecord]:
    """Job id -> :class:`SlurmRecord` from ``squeue -o %i|%T|%j|%u|%V`` or ``sacct -o JobID,State,JobName,User,Submit``."""
    found = {}
    for line in output.splitlines():
        fields = [f.strip() for f in line.split("|")]
        if len(fields) == 5 and fields[0] and fields[1]:
            job_id, state, name, user, submit = fields
            found[job_id] = SlurmRecord(job_id, name, user, submit, state.split()[0])
    return found


def is_ours(recorded: SlurmRecord, found: SlurmRecord | None) -> bool:
    """True when the job SLURM knows under ``recorded.job_id`` is the one we submitted.

    Name and user must match, and SLURM's submit time must not be earlier than the recorded one (a
    requeue moves it later). After ``slurm/local-cluster.sh stop && up`` job ids restart at 1: a job
    that took a recorded id has another name (:func:`launch_job_name`), so it is not ours.
    """
    return (
        found is not None
        and found.name == recorded.name
        and found.user == recorded.user
        and found.submit_time >= recorded.submit_time
    )


def write_slurm_record(run_dir: Path, record: SlurmRecord) -> None:
    """Record in ``run_dir`` the SLURM job just submitted for it (the state is not kept)."""
    atomic_write_text(run_dir / SLURM_RECORD_FILE, json.dumps(asdict(replace(record, state=""))))


def read_slurm_record(run_dir: Path) -> SlurmRecord | None:
    """The SLURM job last submitted for ``run_dir``; None when none was recorded."""
    path = run_dir / SLURM_RECORD_FILE
    return SlurmRecord(**json.loads(path.read_text())) if path.is_file() else None


def query_slurm_records(job_ids: Sequence[str]) -> dict[str, SlurmRecord]:
    """What SLURM says of each job (controller first, then accounting), with name, user and submit time.

    Raises:
        SlurmQueryError: neither squeue nor sacct answered.
    """
    ids = ",".join(job_ids)
    queued, queue_error = _slurm_output(
        ["squeue", "-h", "-r", "--states=all", "-o", SQUEUE_FIELDS, "-j", ids]
    )
    if queue_error is not None and "Invalid job id" in queue_error:
        queue_error = None
    accounted, acct_error = _slurm_output(["sacct", "-n", "-X", "-P", "-o", SACCT_FIELDS, "-j", ids])
    if queue_error is not None and acct_error is not None:
        raise SlurmQueryError(f"{queue_error}; {acct_error}")
    return {**parse_slurm_records(accounted), **parse_slurm_records(queued)}


def submitted_jobs(name: str) -> dict[str, SlurmRecord]:
    """The jobs SLURM's controller holds under the job name ``name`` (one launch's array tasks)."""
    output, _ = _slurm_output(["squeue", "-h", "-r", "--states=all", "-o", SQUEUE_FIELDS, "--name", name])
    return parse_slurm_records(output)


def check_slurm(
    states: Mapping[str, RunState],
    query: Callable[[Sequence[str]], dict[str, str]] = query_slurm_states,
    records: Mapping[str, SlurmRecord] | None = None,
    query_records: Callable[[Sequence[str]], dict[str, SlurmRecord]] = query_slurm_records,
) -> dict[str, RunState]:
    """Ask SLURM about every job that may still be alive: those submitted, and those MLflow shows RUNNING.

    A job killed without cleanup (SIGKILL, out of memory, node failure) leaves its run RUNNING for good;
    SLURM knows it ended. A job ``vice-sweep`` recorded at submission (``records``) counts as alive only
    while SLURM holds a job of that id that :func:`is_ours`; then it is planned as running even with no
    MLflow run yet (still PENDING) or with a KILLED one (requeued). Runs without a record but with SLURM
    tags (submitted before records existed) are asked by id alone. Local runs stay as they are.

    Args:
        states: :func:`fetch_states`'s run key -> state.
        query: job ids -> SLURM states (:func:`query_slurm_states`), for runs without a record.
        records: run key -> the SLURM job last submitted for it (:func:`read_slurm_record`).
        query_records: job ids -> SLURM's records (:func:`query_slurm_records`).

    Returns:
        ``states`` with ``slurm_state`` set (:data:`SLURM_UNKNOWN_JOB` for a job SLURM does not know or
        that is not ours), plus a ``SCHEDULED`` state for a live submitted job; unchanged, with a warning,
        when SLURM does not answer.
    """
    records = records or {}
    checked = dict(states)
    asked_records = {
        key: record
        for key, record in records.items()
        if key not in states or states[key].status != "FINISHED"
    }
    if asked_records:
        try:
            found = query_records(sorted({r.job_id for r in asked_records.values()}))
        except SlurmQueryError as error:
            log.warning(
                "could not ask SLURM whether %d submitted job(s) are alive: %s", len(asked_records), error
            )
            found = {}
            asked_records = {}
        for key, record in asked_records.items():
            now = found.get(record.job_id)
            slurm_state = now.state if now is not None and is_ours(record, now) else SLURM_UNKNOWN_JOB
            state = states.get(key)
            if slurm_job_alive(slurm_state):
                tags = {**(state.tags if state else {}), "slurm_array_id": record.job_id}
                checked[key] = RunState("SCHEDULED", state.run_id if state else "", tags, slurm_state)
            elif state is not None and state.status == "RUNNING":
                checked[key] = replace(state, slurm_state=slurm_state)
    asked = {
        key: job_id
        for key, state in states.items()
        if key not in records
        and state.status == "RUNNING"
        and (job_id := slurm_job_id(state.tags)) is not None
    }
    if not asked:
        return checked
    try:
        states_by_id = query(sorted(set(asked.values())))
    except SlurmQueryError as error:
        log.warning("could not ask SLURM whether %d running job(s) are alive: %s", len(asked), error)
        return checked
    for key, job_id in asked.items():
        checked[key] = replace(states[key], slurm_state=states_by_id.get(job_id, SLURM_UNKNOWN_JOB))
    return checked
