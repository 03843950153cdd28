"""The write side: the MLflow run logger, the experiment and parent run of a sweep, a job's run.

A job stores its run id in ``<run_dir>/mlflow_run_id``; a requeued or re-submitted job re-attaches to
that run instead of creating a duplicate.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vice.io import atomic_write_text
from vice.launch.tracking.client import (
    ARTIFACTS_DIR_NAME,
    check_local_sqlite,
    mlflow_client,
    sqlite_path,
    with_retry,
)
from vice.launch.tracking.identity import join_sweep_ids, sweep_ids_of
from vice.launch.tracking.names import (
    ACTIVE_TIME_METRIC,
    EXPERIMENT_KIND_TAG,
    RUN_ID_FILE,
    RUN_TOKEN_FILE,
    RUN_TOKEN_TAG,
    SWEEP_IDS_TAG,
    TRAINING_EXPERIMENT_KIND,
)
from vice.launch.tracking.params import param_text, tag_text
from vice.redact import redact_uri
from vice.run_logger import check_status

#: MLflow's limits (mlflow.utils.validation): entities per log_batch call.
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000


def get_or_create_experiment(client: Any, tracking_uri: str, experiment: str) -> str:
    """The id of the MLflow experiment ``experiment``, created (artifacts beside an SQLite store) if absent.

    The experiment is tagged a training experiment (:data:`EXPERIMENT_KIND_TAG`), so the MLflow UI opens it
    on its runs; an existing experiment without the tag gets it, one whose kind was set keeps it.
    """
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(experiment)
    if found is not None:
        if EXPERIMENT_KIND_TAG not in found.tags:
            with_retry(
                lambda: client.set_experiment_tag(
                    found.experiment_id, EXPERIMENT_KIND_TAG, TRAINING_EXPERIMENT_KIND
                )
            )
        return str(found.experiment_id)
    db = sqlite_path(tracking_uri)
    location = (db.parent / ARTIFACTS_DIR_NAME).as_uri() if db is not None else None
    tags = {EXPERIMENT_KIND_TAG: TRAINING_EXPERIMENT_KIND}
    try:
        return str(
            with_retry(lambda: client.create_experiment(experiment, artifact_location=location, tags=tags))
        )
    except MlflowException as exc:
        found = client.get_experiment_by_name(experiment)  # another process created it first
        if found is None:
            raise exc
        return str(found.experiment_id)


def prepare_tracking(tracking_uri: str, experiment: str) -> str:
    """Create the store (running its migrations) and the experiment, once, before any job starts.

    Call it in the submitting process: many jobs creating a fresh SQLite store at once race in its
    schema migration, and experiment creation is racy across processes.

    Args:
        tracking_uri: an absolute URI from :func:`vice.launch.tracking.client.resolve_tracking_uri`.
        experiment: the MLflow experiment name (the paper experiment, e.g. ``table3_decomposition``).

    Returns:
        The experiment id.
    """
    check_local_sqlite(tracking_uri)
    db = sqlite_path(tracking_uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    return get_or_create_experiment(mlflow_client(tracking_uri), tracking_uri, experiment)


def git_commit(repo_dir: Path | None = None) -> str:
    """The commit the code runs from: ``$VICE_GIT_COMMIT``, else ``git rev-parse HEAD``, else "unknown"."""
    if os.environ.get("VICE_GIT_COMMIT"):
        return os.environ["VICE_GIT_COMMIT"]
    where = repo_dir or Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip()


def job_tags(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Tags describing where a job runs: ``git_commit``, ``hostname``, ``slurm_job_id``, ``slurm_array_id``.

    The SLURM tags are set only inside a SLURM job; ``slurm_array_id`` is ``<array job>_<task>``.
    """
    env = os.environ if environ is None else environ
    tags = {"git_commit": git_commit(), "hostname": socket.gethostname()}
    if "SLURM_JOB_ID" in env:
        tags["slurm_job_id"] = env["SLURM_JOB_ID"]
    if "SLURM_ARRAY_JOB_ID" in env and "SLURM_ARRAY_TASK_ID" in env:
        tags["slurm_array_id"] = f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return tags


def start_parent_run(
    tracking_uri: str,
    experiment_id: str,
    sweep_id: str,
    *,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> str:
    """Create the parent run of one sweep invocation (submitting process, after :func:`prepare_tracking`).

    Args:
        tracking_uri: an absolute URI from :func:`vice.launch.tracking.client.resolve_tracking_uri`.
        experiment_id: from :func:`prepare_tracking`.
        sweep_id: the sweep's id, set as the ``sweep_id`` tag.
        run_name: display name; defaults to the sweep id.
        tags: extra tags (e.g. ``experiment``, ``smoke``).

    Returns:
        The parent run id; jobs pass it to :func:`open_run` and the sweep ends it with :func:`end_run`.
    """
    all_tags = {**job_tags(), "sweep_id": sweep_id, **(tags or {})}
    all_tags = {k: tag_text(v) for k, v in all_tags.items()}
    client = mlflow_client(tracking_uri)
    run = with_retry(lambda: client.create_run(experiment_id, run_name=run_name or sweep_id, tags=all_tags))
    return str(run.info.run_id)


def set_running(tracking_uri: str, run_id: str) -> None:
    """Set a run (a resumed sweep's or study's parent) back to RUNNING."""
    client = mlflow_client(tracking_uri)
    with_retry(lambda: client.update_run(run_id, status="RUNNING"))


def end_run(tracking_uri: str, run_id: str, status: str = "FINISHED") -> None:
    """End a run (e.g. the sweep's parent) with a status from :data:`vice.run_logger.END_STATUSES`."""
    check_status(status)
    client = mlflow_client(tracking_uri)
    with_retry(lambda: client.set_terminated(run_id, status=status))


class MLflowLogger:
    """A :class:`vice.run_logger.RunLogger` writing to one MLflow run; every write is one ``log_batch``.

    Build it with :func:`open_run`, which creates or re-attaches the run, or :func:`run_logger` for an
    existing run.
    """

    #: Where an attempt's active time is read from (seconds; only differences count).
    clock = staticmethod(time.monotonic)

    def __init__(self, client: Any, run_id: str, active_before_s: float | None = None) -> None:
        """Bind to ``run_id``; with ``active_before_s`` (a job's run) this attempt's time is counted.

        Args:
            client: from :func:`vice.launch.tracking.client.mlflow_client`.
            run_id: the run.
            active_before_s: the run's active seconds before this attempt; :meth:`close` logs them plus
                this attempt's as :data:`ACTIVE_TIME_METRIC`. None logs no active time.
        """
        self.client = client
        self.run_id = run_id
        self.active_before_s = active_before_s
        self.opened_s = self.clock()

    def _log_batch(self, **entities: list[Any]) -> None:
        with_retry(lambda: self.client.log_batch(self.run_id, **entities, synchronous=True))

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Record params; values rendered by :func:`param_text`. Re-logging an equal value is allowed."""
        from mlflow.entities import Param

        items = [Param(k, param_text(v)) for k, v in params.items()]
        for start in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
            self._log_batch(params=items[start : start + MAX_PARAMS_TAGS_PER_BATCH])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Record every metric at ``step`` in one transaction (few, short SQLite write locks)."""
        from mlflow.entities import Metric

        now_ms = int(time.time() * 1000)
        items = [Metric(k, float(v), now_ms, int(step)) for k, v in metrics.items()]
        for start in range(0, len(items), MAX_METRICS_PER_BATCH):
            self._log_batch(metrics=items[start : start + MAX_METRICS_PER_BATCH])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Set or overwrite tags (credentials redacted, values cut to MLflow's 8000-character limit)."""
        from mlflow.entities import RunTag

        items = [RunTag(k, tag_text(v)) for k, v in tags.items()]
        for start in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
            self._log_batch(tags=items[start : start + MAX_PARAMS_TAGS_PER_BATCH])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Copy a local file or directory into the run's artifact store."""
        if not Path(path).exists():
            raise FileNotFoundError(f"artifact {path} does not exist; log it after writing it")
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def close(self, status: str = "FINISHED") -> None:
        """End the run with ``status`` ("FINISHED" | "FAILED" | "KILLED"), first adding this attempt's time."""
        check_status(status)
        if self.active_before_s is not None:
            active_s = self.active_before_s + self.clock() - self.opened_s
            self.log_metrics({ACTIVE_TIME_METRIC: active_s}, step=0)
            self.active_before_s = None  # a second close adds nothing
        with_retry(lambda: self.client.set_terminated(self.run_id, status=status))


def run_logger(tracking_uri: str, run_id: str) -> MLflowLogger:
    """A logger bound to an existing run (a study's parent run, to log its results)."""
    return MLflowLogger(mlflow_client(tracking_uri), run_id)


def _find_by_token(client: Any, experiment_id: str, token: str) -> str | None:
    """The run an earlier, killed :func:`open_run` created with ``token``; None when it created none."""
    found = with_retry(
        lambda: client.search_runs([experiment_id], filter_string=f"tags.{RUN_TOKEN_TAG} = '{token}'")
    )
    return str(found[0].info.run_id) if found else None


def _create_run(
    client: Any, experiment_id: str, run_dir: Path, run_name: str | None, tags: Mapping[str, str]
) -> str:
    """Create the job's run so that a kill at any point leaves no stray run.

    The run's token is written to ``<run_dir>/mlflow_run_token`` before the run is created and tagged
    with it; the id file is written after. A job killed in between finds its run by the token.

    Returns:
        The run id, also written to ``<run_dir>/mlflow_run_id``.
    """
    token_file = run_dir / RUN_TOKEN_FILE
    token = token_file.read_text().strip() if token_file.exists() else ""
    run_id = _find_by_token(client, experiment_id, token) if token else None
    if run_id is None:
        if not token:
            token = uuid.uuid4().hex
            atomic_write_text(token_file, token, durable=True)
        create_tags = {k: tag_text(v) for k, v in {**tags, RUN_TOKEN_TAG: token}.items()}
        run = with_retry(lambda: client.create_run(experiment_id, run_name=run_name, tags=create_tags))
        run_id = str(run.info.run_id)
    atomic_write_text(run_dir / RUN_ID_FILE, run_id, durable=True)
    token_file.unlink(missing_ok=True)
    return run_id


def open_run(
    tracking_uri: str,
    experiment: str,
    run_dir: str | Path,
    *,
    parent_run_id: str | None = None,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> MLflowLogger:
    """Open the job's run: re-attach to the one named in ``<run_dir>/mlflow_run_id``, else create it.

    A re-attached run is set back to RUNNING and its tags are refreshed (a requeued job gets a new host
    and SLURM ids); its params and metrics stay, so a resumed job continues the same run. A run resumed
    by a later sweep keeps every earlier sweep in its ``sweep_ids`` tag. A new run is created through a
    token file (:func:`_create_run`), so a job killed while creating it leaves no stray run. Closing the
    logger adds the attempt's time to :data:`ACTIVE_TIME_METRIC`.

    Args:
        tracking_uri: an absolute URI from :func:`vice.launch.tracking.client.resolve_tracking_uri`.
        experiment: the MLflow experiment name (created if :func:`prepare_tracking` was not called).
        run_dir: the job's deterministic dir; holds the run id file.
        parent_run_id: the sweep's parent run (sets ``mlflow.parentRunId``, also on a resumed run); None for a
            standalone run.
        run_name: display name of a new run.
        tags: the job's tags (``sweep_id``, ``experiment``, ``run_key``, ``smoke``, ...); the runtime
            tags of :func:`job_tags` are added.

    Returns:
        A logger bound to the run; call ``close(status)`` when the job ends.
    """
    from mlflow.exceptions import MlflowException

    client = mlflow_client(tracking_uri)
    run_dir = Path(run_dir)
    id_file = run_dir / RUN_ID_FILE
    all_tags = {**job_tags(), **(tags or {})}
    if not id_file.exists():
        experiment_id = get_or_create_experiment(client, tracking_uri, experiment)
        create_tags = dict(all_tags)
        create_tags[SWEEP_IDS_TAG] = join_sweep_ids([], all_tags.get("sweep_id"))
        if parent_run_id is not None:
            create_tags["mlflow.parentRunId"] = parent_run_id
        run_id = _create_run(client, experiment_id, run_dir, run_name, create_tags)
        return MLflowLogger(client, run_id, active_before_s=0.0)
    run_id = id_file.read_text().strip()
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise LookupError(
            f"{id_file} names MLflow run {run_id!r}, which is not in {redact_uri(tracking_uri)}: point "
            "tracking.tracking_uri at the store that has it, or delete the file to start a new run"
        ) from None
    logger = MLflowLogger(client, run_id, active_before_s=run.data.metrics.get(ACTIVE_TIME_METRIC, 0.0))
    with_retry(lambda: client.update_run(run_id, status="RUNNING"))
    moved = {} if parent_run_id is None else {"mlflow.parentRunId": parent_run_id}  # under the new sweep
    sweep_ids = join_sweep_ids(sweep_ids_of(run.data.tags), all_tags.get("sweep_id"))
    logger.set_tags({**all_tags, **moved, SWEEP_IDS_TAG: sweep_ids})
    return logger
