"""The one MLflow client factory, and where the store is: URIs, credentials, SQLite's file system.

Both sides of the tracking (and :mod:`analysis`) build their client with :func:`mlflow_client`.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any, TypeVar

from vice.redact import redact_uri, split_credentials

#: MLflow's telemetry switch: no phoning home from nodes. Set before any mlflow import in a job (its
#: telemetry client starts at import).
TELEMETRY_ENV = "MLFLOW_DISABLE_TELEMETRY"
os.environ.setdefault(TELEMETRY_ENV, "true")

#: File name of the default SQLite store inside the output dir.
DEFAULT_DB_NAME = "mlflow.db"
#: Folder beside an SQLite store where its runs' artifacts go.
ARTIFACTS_DIR_NAME = "mlflow-artifacts"
#: SQLite writers wait 20 s on a lock inside MLflow; after that we retry this often, backing off.
LOCK_RETRIES = 6
LOCK_BACKOFF_S = 0.5
LOCK_MESSAGE = "database is locked"
#: MLflow's own environment variables for an ``mlflow server``'s basic-auth credentials.
USERNAME_ENV, PASSWORD_ENV = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"
#: Filesystems where SQLite locking is unreliable: use an `mlflow server` there instead.
NETWORK_FILESYSTEMS = frozenset({"nfs", "nfs4", "lustre", "gpfs", "beegfs", "cifs", "smb3", "fuse.sshfs"})

T = TypeVar("T")

log = logging.getLogger(__name__)


def mlflow_client(tracking_uri: str) -> Any:
    """An ``mlflow.tracking.MlflowClient`` for ``tracking_uri`` (telemetry off); the only factory."""
    os.environ[TELEMETRY_ENV] = "true"
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of an ``sqlite:///`` URI; None for a server."""
    return Path(tracking_uri.removeprefix("sqlite:///")) if tracking_uri.startswith("sqlite:///") else None


def store_exists(tracking_uri: str) -> bool:
    """False for an SQLite store whose file is absent (reading must not create it); True otherwise."""
    db = sqlite_path(tracking_uri)
    return db is None or db.exists()


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
    db = sqlite_path(tracking_uri)
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


def check_local_sqlite(tracking_uri: str) -> None:
    """Refuse an SQLite store on a network file system, where its locking corrupts databases.

    Raises:
        ValueError: naming the file system and how to run an ``mlflow server`` instead.
    """
    db = sqlite_path(tracking_uri)
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


def with_retry(write: Callable[[], T]) -> T:
    """Run an MLflow call, retrying with jittered backoff while SQLite says the database is locked.

    At most :data:`LOCK_RETRIES` tries, waiting about :data:`LOCK_BACKOFF_S` x 2^attempt between them;
    each retry is logged as a warning. Any other error, and the last try's, is raised.
    """
    for attempt in range(LOCK_RETRIES - 1):
        try:
            return write()
        except Exception as exc:
            if LOCK_MESSAGE not in str(exc):
                raise
            wait_s = LOCK_BACKOFF_S * 2**attempt * random.uniform(0.5, 1.5)
            log.warning(
                "MLflow store: %s (try %d of %d); retrying in %.1f s",
                LOCK_MESSAGE,
                attempt + 1,
                LOCK_RETRIES,
                wait_s,
            )
            time.sleep(wait_s)
    return write()
