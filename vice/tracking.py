"""Deprecated: moved to :mod:`vice.launch.tracking` (and the run logger protocol to :mod:`vice.run_logger`).

This re-export stays for one release.
"""

from __future__ import annotations

from vice.launch.tracking.client import (
    credentials_to_environment,
    filesystem_type,
    mlflow_client,
    resolve_tracking_uri,
)
from vice.launch.tracking.names import RUN_ID_FILE
from vice.launch.tracking.params import MAX_PARAM_VALUE_LENGTH, TRUNCATION_MARK, flatten_config, param_text
from vice.launch.tracking.write import (
    MLflowLogger,
    end_run,
    git_commit,
    job_tags,
    open_run,
    prepare_tracking,
    start_parent_run,
)
from vice.run_logger import END_STATUSES, NullLogger, RunLogger

__all__ = [
    "END_STATUSES",
    "MAX_PARAM_VALUE_LENGTH",
    "RUN_ID_FILE",
    "TRUNCATION_MARK",
    "MLflowLogger",
    "NullLogger",
    "RunLogger",
    "credentials_to_environment",
    "end_run",
    "filesystem_type",
    "flatten_config",
    "git_commit",
    "job_tags",
    "mlflow_client",
    "open_run",
    "param_text",
    "prepare_tracking",
    "resolve_tracking_uri",
    "start_parent_run",
]
