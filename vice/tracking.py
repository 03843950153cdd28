"""The run logger the trainer and the evaluation log through, and its MLflow implementation.

Layout (docs/architecture.md): one MLflow experiment per paper experiment; a parent run per sweep
invocation, created by the submitting process with :func:`prepare_tracking` and :func:`start_parent_run`
*before* the fan-out (concurrent first-time creation of an SQLite store races in its migrations); one
child run per job, opened with :func:`open_run`.

A job stores its run id in ``<run_dir>/mlflow_run_id``; a requeued or re-submitted job re-attaches to
that run instead of creating a duplicate.

mlflow is imported inside functions: submitit pickles the entry point with cloudpickle, and nothing here
holds a lock, a handler or a client at module level.
"""

from __future__ import annotations

import dataclasses
import os
import random
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, MutableMapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

from vice.redact import redact_uri, split_credentials

# Before any mlflow import in a job (its telemetry client starts at import): no phoning home from nodes.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

#: Run statuses a job can end with.
END_STATUSES = ("FINISHED", "FAILED", "KILLED")
#: File in the job dir holding the job's MLflow run id.
RUN_ID_FILE = "mlflow_run_id"
#: File name of the default SQLite store inside the output dir.
DEFAULT_DB_NAME = "mlflow.db"
#: Folder beside an SQLite store where its runs' artifacts go.
ARTIFACTS_DIR_NAME = "mlflow-artifacts"
#: MLflow's limits (mlflow.utils.validation): value lengths and entities per log_batch call.
MAX_PARAM_VALUE_LENGTH = 6000
MAX_TAG_VALUE_LENGTH = 8000
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
#: Appended to a value cut to MLflow's length limit (the cut is deterministic, so re-logging matches).
TRUNCATION_MARK = "...<truncated>"
#: SQLite writers wait 20 s on a lock inside MLflow; after that we retry this often, backing off.
LOCK_RETRIES = 6
LOCK_BACKOFF_S = 0.5
LOCK_MESSAGE = "database is locked"
#: MLflow's own environment variables for an ``mlflow server``'s basic-auth credentials.
USERNAME_ENV, PASSWORD_ENV = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"
#: Filesystems where SQLite locking is unreliable: use an `mlflow server` there instead.
NETWORK_FILESYSTEMS = frozenset({"nfs", "nfs4", "lustre", "gpfs", "beegfs", "cifs", "smb3", "fuse.sshfs"})

T = TypeVar("T")


class RunLogger(Protocol):
    """What a job logs through. Only rank 0 holds a real logger; other ranks get :class:`NullLogger`."""

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Record params (flat, dotted keys; values are stored as strings)."""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Record metric values at a training step."""

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Set (or overwrite) run tags."""

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Copy a local file into the run's artifacts, under ``artifact_path`` if given."""

    def close(self, status: str = "FINISHED") -> None:
        """End the run with a status from :data:`END_STATUSES`."""


class NullLogger:
    """A logger that records nothing (tracking disabled, or a rank other than 0)."""

    run_id: str | None = None

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Record nothing."""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Record nothing."""

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Record nothing."""

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Record nothing."""

    def close(self, status: str = "FINISHED") -> None:
        """Check the status like a real logger would, record nothing."""
        _check_status(status)


def _check_status(status: str) -> None:
    if status not in END_STATUSES:
        raise ValueError(f"run status {status!r} is not one of {END_STATUSES}")


def _tag_text(value: Any) -> str:
    return _truncate(redact_uri(str(value)), MAX_TAG_VALUE_LENGTH)


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - len(TRUNCATION_MARK)] + TRUNCATION_MARK


def param_text(value: Any) -> str:
    """Render one config value as an MLflow param string that ``analysis.runs.cast_param`` reads back.

    ``None`` -> ``"None"``, booleans -> ``"true"``/``"false"``, sequences -> ``"[0.5, 1.5]"``, others
    ``str``; credentials in a URI redacted (:func:`vice.redact.redact_uri`); cut to MLflow's
    6000-character limit with :data:`TRUNCATION_MARK`.
    """
    if value is None:
        text = "None"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, list | tuple):
        text = str(list(value))
    else:
        text = str(value)
    return _truncate(redact_uri(text), MAX_PARAM_VALUE_LENGTH)


def _as_container(cfg: Any) -> Any:
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return dataclasses.asdict(cfg)
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(cfg, DictConfig | ListConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def flatten_config(cfg: Any, prefix: str = "") -> dict[str, str]:
    """Flatten a resolved config into MLflow params with dotted keys (``model.embed_dim`` -> ``"128"``).

    Args:
        cfg: a :class:`vice.config.Config`, a DictConfig (interpolations are resolved) or a nested dict.
        prefix: prepended to every key (used in the recursion).

    Returns:
        One entry per leaf, in config order; lists are leaves; values rendered by :func:`param_text`.
    """
    flat: dict[str, str] = {}
    for key, value in _as_container(cfg).items():
        if isinstance(value, Mapping):
            flat.update(flatten_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = param_text(value)
    return flat


def _sqlite_path(tracking_uri: str) -> Path | None:
    return Path(tracking_uri.removeprefix("sqlite:///")) if tracking_uri.startswith("sqlite:///") else None


def resolve_tracking_uri(tracking_uri: str | None, output_dir: str | Path) -> str:
    """Return an absolute tracking URI, so every job, whatever its working dir, writes the same store.

    Args:
        tracking_uri: None (an SQLite file ``<output_dir>/mlflow.db``), ``sqlite:///<path>`` (a relative
            path is made absolute against the current dir) or an ``http(s)://`` server.
        output_dir: the project's output dir, holding the default store.

    Returns:
        ``sqlite:////abs/path/mlflow.db`` or the server URI unchanged.
    """
    if tracking_uri is None:
        return f"sqlite:///{(Path(output_dir) / DEFAULT_DB_NAME).resolve()}"
    db = _sqlite_path(tracking_uri)
    if db is not None:
        return f"sqlite:///{db.resolve()}"
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri
    raise ValueError(
        f"tracking.tracking_uri={redact_uri(tracking_uri)!r} is not supported: use sqlite:////abs/path/mlflow.db, "
        "an http(s):// mlflow server, or leave it unset for <output dir>/mlflow.db"
    )


def credentials_to_environment(tracking_uri: str, environ: MutableMapping[str, str] | None = None) -> str:
    """Move ``user:password@`` of an ``http(s)://`` tracking URI into MLflow's environment variables.

    MLflow sends :data:`USERNAME_ENV` / :data:`PASSWORD_ENV` as basic auth to an ``mlflow server``; the
    jobs a sweep starts inherit them, so the URI that is logged, saved, pickled and printed holds no
    secret. Setting the variables yourself is the preferred way; this only moves a secret typed into
    the URI.

    Args:
        tracking_uri: any tracking URI; only an ``http(s)://`` one with user info changes.
        environ: the environment to set (default ``os.environ``).

    Returns:
        The URI without its user info.

    Raises:
        ValueError: the environment already holds different credentials (the message shows no secret).
    """
    env = os.environ if environ is None else environ
    if not tracking_uri.startswith(("http://", "https://")):
        return tracking_uri
    clean, user, password = split_credentials(tracking_uri)
    for name, value in ((USERNAME_ENV, user), (PASSWORD_ENV, password)):
        if value is None:
            continue
        if env.get(name, value) != value:
            raise ValueError(
                f"tracking.tracking_uri={redact_uri(tracking_uri)} holds credentials that differ from "
                f"${name}: give them once, preferably as {USERNAME_ENV} and {PASSWORD_ENV}"
            )
        env[name] = value
    return clean


def filesystem_type(path: Path, mounts: str) -> str:
    """Filesystem type of the deepest mount point holding ``path``.

    Args:
        path: an absolute path (need not exist).
        mounts: the text of ``/proc/mounts`` (device, mount point, type, ... per line).

    Returns:
        The type, e.g. ``"ext4"`` or ``"nfs4"``; ``""`` when no mount matches.
    """
    best, best_type = -1, ""
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1]
        if (path == Path(point) or Path(point) in path.parents) and len(point) > best:
            best, best_type = len(point), fields[2]
    return best_type


def _check_local_sqlite(tracking_uri: str) -> None:
    db = _sqlite_path(tracking_uri)
    mounts = Path("/proc/mounts")
    if db is None or not mounts.exists():
        return
    fs = filesystem_type(db, mounts.read_text())
    if fs in NETWORK_FILESYSTEMS:
        raise ValueError(
            f"the MLflow store {db} is on {fs}, where SQLite locking corrupts databases. Run a server on "
            "a login node instead: `mlflow server --backend-store-uri sqlite:////local/disk/mlflow.db "
            f"--default-artifact-root {db.parent / ARTIFACTS_DIR_NAME} --host 0.0.0.0 --port 5000 "
            "--workers 2` and set tracking.tracking_uri=http://<login node>:5000"
        )


def _with_retry(write: Callable[[], T]) -> T:
    """Run an MLflow write, retrying with jittered backoff while SQLite says the database is locked."""
    for attempt in range(LOCK_RETRIES - 1):
        try:
            return write()
        except Exception as exc:
            if LOCK_MESSAGE not in str(exc):
                raise
            time.sleep(LOCK_BACKOFF_S * 2**attempt * random.uniform(0.5, 1.5))
    return write()


def _client(tracking_uri: str) -> Any:
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def _get_or_create_experiment(client: Any, tracking_uri: str, experiment: str) -> str:
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(experiment)
    if found is not None:
        return str(found.experiment_id)
    db = _sqlite_path(tracking_uri)
    location = (db.parent / ARTIFACTS_DIR_NAME).as_uri() if db is not None else None
    try:
        return str(_with_retry(lambda: client.create_experiment(experiment, artifact_location=location)))
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
        tracking_uri: an absolute URI from :func:`resolve_tracking_uri`.
        experiment: the MLflow experiment name (the paper experiment, e.g. ``table3_decomposition``).

    Returns:
        The experiment id.
    """
    _check_local_sqlite(tracking_uri)
    db = _sqlite_path(tracking_uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    return _get_or_create_experiment(_client(tracking_uri), tracking_uri, experiment)


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
        tracking_uri: an absolute URI from :func:`resolve_tracking_uri`.
        experiment_id: from :func:`prepare_tracking`.
        sweep_id: the sweep's id, set as the ``sweep_id`` tag.
        run_name: display name; defaults to the sweep id.
        tags: extra tags (e.g. ``experiment``, ``smoke``).

    Returns:
        The parent run id; jobs pass it to :func:`open_run` and the sweep ends it with :func:`end_run`.
    """
    all_tags = {**job_tags(), "sweep_id": sweep_id, **(tags or {})}
    all_tags = {k: _tag_text(v) for k, v in all_tags.items()}
    client = _client(tracking_uri)
    run = _with_retry(lambda: client.create_run(experiment_id, run_name=run_name or sweep_id, tags=all_tags))
    return str(run.info.run_id)


def end_run(tracking_uri: str, run_id: str, status: str = "FINISHED") -> None:
    """End a run (e.g. the sweep's parent) with a status from :data:`END_STATUSES`."""
    _check_status(status)
    client = _client(tracking_uri)
    _with_retry(lambda: client.set_terminated(run_id, status=status))


class MLflowLogger:
    """A :class:`RunLogger` writing to one MLflow run; every write is one ``log_batch`` transaction.

    Build it with :func:`open_run`, which creates or re-attaches the run.
    """

    def __init__(self, client: Any, run_id: str) -> None:
        self.client = client
        self.run_id = run_id

    def _log_batch(self, **entities: list[Any]) -> None:
        _with_retry(lambda: self.client.log_batch(self.run_id, **entities, synchronous=True))

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

        items = [RunTag(k, _tag_text(v)) for k, v in tags.items()]
        for start in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
            self._log_batch(tags=items[start : start + MAX_PARAMS_TAGS_PER_BATCH])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Copy a local file or directory into the run's artifact store."""
        if not Path(path).exists():
            raise FileNotFoundError(f"artifact {path} does not exist; log it after writing it")
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def close(self, status: str = "FINISHED") -> None:
        """End the run with ``status`` ("FINISHED" | "FAILED" | "KILLED")."""
        _check_status(status)
        _with_retry(lambda: self.client.set_terminated(self.run_id, status=status))


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


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
    and SLURM ids); its params and metrics stay, so a resumed job continues the same run.

    Args:
        tracking_uri: an absolute URI from :func:`resolve_tracking_uri`.
        experiment: the MLflow experiment name (created if :func:`prepare_tracking` was not called).
        run_dir: the job's deterministic dir; holds the run id file.
        parent_run_id: the sweep's parent run (sets ``mlflow.parentRunId``); None for a standalone run.
        run_name: display name of a new run.
        tags: the job's tags (``sweep_id``, ``experiment``, ``run_key``, ``smoke``, ...); the runtime
            tags of :func:`job_tags` are added.

    Returns:
        A logger bound to the run; call ``close(status)`` when the job ends.
    """
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    id_file = Path(run_dir) / RUN_ID_FILE
    all_tags = {**job_tags(), **(tags or {})}
    if id_file.exists():
        run_id = id_file.read_text().strip()
        try:
            client.get_run(run_id)
        except MlflowException:
            raise LookupError(
                f"{id_file} names MLflow run {run_id!r}, which is not in {redact_uri(tracking_uri)}: point "
                "tracking.tracking_uri at the store that has it, or delete the file to start a new run"
            ) from None
        logger = MLflowLogger(client, run_id)
        _with_retry(lambda: client.update_run(run_id, status="RUNNING"))
        logger.set_tags(all_tags)
        return logger
    experiment_id = _get_or_create_experiment(client, tracking_uri, experiment)
    create_tags = dict(all_tags)
    if parent_run_id is not None:
        create_tags["mlflow.parentRunId"] = parent_run_id
    create_tags = {k: _tag_text(v) for k, v in create_tags.items()}
    run = _with_retry(lambda: client.create_run(experiment_id, run_name=run_name, tags=create_tags))
    id_file.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(id_file, run.info.run_id)
    return MLflowLogger(client, run.info.run_id)
