"""The plan: each job's state (done, running, dead, failed, to do), what to submit, and the plan table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from vice.launch.overrides import (
    display_overrides,
)
from vice.launch.sweep.compose import Job
from vice.launch.sweep.cost import training_hours
from vice.launch.sweep.slurm import slurm_job_alive, slurm_job_id
from vice.launch.sweep.state import RunState

#: Plan states, and the MLflow statuses they come from; "dead" is a RUNNING run whose SLURM job ended.
DONE, RUNNING, DEAD, FAILED, TODO = "done", "running", "dead", "failed", "to do"

STATES = (DONE, RUNNING, DEAD, FAILED, TODO)

MLFLOW_STATES = {
    "FINISHED": DONE,
    "RUNNING": RUNNING,
    "SCHEDULED": RUNNING,
    "FAILED": FAILED,
    "KILLED": FAILED,
}


def plan_state(state: RunState | None) -> str:
    """The plan state of a job: done, running, dead (a RUNNING run whose SLURM job ended), failed or to do."""
    if state is None:
        return TODO
    planned = MLFLOW_STATES.get(state.status, FAILED)
    if planned == RUNNING and state.slurm_state is not None and not slurm_job_alive(state.slurm_state):
        return DEAD
    return planned


def plan_label(state: RunState | None) -> str:
    """A job's plan state as the plan shows it, with SLURM's word on a running one.

    E.g. ``dead (SLURM 12_3: CANCELLED)``, ``running (SLURM 12_3: PENDING)``, ``running`` (no SLURM job).
    """
    planned = plan_state(state)
    if state is None or state.slurm_state is None:
        return planned
    return f"{planned} (SLURM {slurm_job_id(state.tags)}: {state.slurm_state})"


def jobs_to_submit(
    jobs: Sequence[Job], states: Mapping[str, RunState], resubmit_running: bool
) -> tuple[list[Job], list[Job]]:
    """The jobs to submit (to do, failed, dead) and the running ones left alone.

    Args:
        jobs: the sweep's jobs.
        states: run key -> state, after :func:`check_slurm`.
        resubmit_running: also submit running jobs SLURM could not vouch for (no SLURM job: local
            launcher, or SLURM did not answer); a job SLURM says is alive is never submitted again.

    Returns:
        ``(to submit, left alone)``.
    """
    submit: list[Job] = []
    left: list[Job] = []
    for job in jobs:
        state = states.get(job.run_key)
        planned = plan_state(state)
        if planned in (TODO, FAILED, DEAD):
            submit.append(job)
        elif planned == RUNNING:
            vouched = state is not None and state.slurm_state is not None
            (submit if resubmit_running and not vouched else left).append(job)
    return submit, left


def varying_overrides(jobs: Sequence[Job]) -> tuple[list[str], set[str]]:
    """The overrides every job shares (shown once) and the keys that vary (shown per job)."""
    per_job = [display_overrides(j.overrides) for j in jobs]
    common = [o for o in per_job[0] if all(o in other for other in per_job)] if per_job else []
    return common, {o.split("=", 1)[0] for overrides in per_job for o in overrides if o not in common}


def plan_table(jobs: Sequence[Job], states: Mapping[str, RunState], gpus: int) -> str:
    """The plan: one row per job (state, run key, overrides, estimated GPU-hours), then the totals."""
    from tabulate import tabulate

    common, _ = varying_overrides(jobs)
    rows = []
    totals = dict.fromkeys(STATES, 0)
    to_run_hours = 0.0
    for job in jobs:
        state = plan_state(states.get(job.run_key))
        totals[state] += 1
        hours = gpus * training_hours(job.config)
        if state in (DEAD, FAILED, TODO):
            to_run_hours += hours
        shown = " ".join(o for o in display_overrides(job.overrides) if o not in common)
        label = plan_label(states.get(job.run_key))
        rows.append([job.index, label, job.run_key, shown or "-", f"{hours:.1f}" if gpus else "-"])
    table = tabulate(rows, headers=["#", "state", "run_key", "overrides", "est. GPU-h"])
    summary = ", ".join(f"{totals[s]} {s}" for s in STATES)
    cost = f"; about {to_run_hours:.0f} GPU-h to run (rough, from the paper's step time)" if gpus else ""
    lines = [table, f"{len(jobs)} jobs: {summary}{cost}"]
    if common:
        lines.insert(0, f"every job: {' '.join(common)}")
    return "\n".join(lines)
