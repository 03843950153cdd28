"""What MLflow knows of each run key of an experiment (read once, paging over its runs)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vice.launch.tracking.client import mlflow_client, store_exists
from vice.launch.tracking.names import RUN_KEY_TAG
from vice.launch.tracking.read import all_runs, find_experiment_id


@dataclass(frozen=True)
class RunState:
    """What MLflow knows of a run key: the status of its best run, its id and its tags.

    Attributes:
        status: the MLflow run status (RUNNING, FINISHED, FAILED, KILLED, SCHEDULED).
        run_id: the MLflow run id.
        tags: the run's tags (``slurm_job_id``, ``slurm_array_id``, log paths, ...).
        slurm_state: for a RUNNING run of a SLURM job, what SLURM says of that job (``RUNNING``,
            ``CANCELLED``, :data:`SLURM_UNKNOWN_JOB`); None when SLURM was not asked or did not answer.
    """

    status: str
    run_id: str
    tags: Mapping[str, str] = field(default_factory=dict)
    slurm_state: str | None = None


def fetch_states(tracking_uri: str, experiment: str) -> tuple[dict[str, RunState], list[Any]]:
    """What MLflow knows of every run key of an experiment (nothing is created when the store is absent).

    Returns:
        ``({run_key: state}, parent runs)``; a FINISHED run wins over others of the same key, then the
        newest.
    """
    if not store_exists(tracking_uri):
        return {}, []
    client = mlflow_client(tracking_uri)
    experiment_id = find_experiment_id(client, experiment)
    if experiment_id is None:
        return {}, []
    runs = sorted(all_runs(client, experiment_id), key=lambda r: r.info.start_time or 0)
    states: dict[str, RunState] = {}
    parents = []
    for run in runs:
        key = run.data.tags.get(RUN_KEY_TAG)
        if key is None:
            parents.append(run)
            continue
        if states.get(key, RunState("", "")).status != "FINISHED":
            states[key] = RunState(run.info.status, run.info.run_id, dict(run.data.tags))
    return states, parents
