"""Deprecated: moved to :mod:`vice.launch.job` (and the run identity to :mod:`vice.launch.tracking.identity`).

This re-export stays for one release; ``python -m vice.job`` still runs one job.
"""

from __future__ import annotations

from vice.launch.job import (
    CHECKPOINT_PATH_FILE,
    CONFIG_FILE,
    ERROR_FILE,
    LOCK_FILE,
    RunDirBusyError,
    hydra_task,
    lock_holder,
    lock_run_dir,
    run_job,
    run_tags,
    tail,
)
from vice.launch.overrides import display_overrides
from vice.launch.tracking.identity import (
    DEFAULT_OUTPUT_DIR,
    NON_SEMANTIC_KEYS,
    RUN_KEY_LENGTH,
    RUNS_DIR,
    SMOKE_SUFFIX,
    compute_run_key,
    is_smoke,
    job_dir,
    semantic_config,
)
from vice.launch.tracking.names import NUM_IMAGES_METRIC

__all__ = [
    "CHECKPOINT_PATH_FILE",
    "CONFIG_FILE",
    "DEFAULT_OUTPUT_DIR",
    "ERROR_FILE",
    "LOCK_FILE",
    "NON_SEMANTIC_KEYS",
    "NUM_IMAGES_METRIC",
    "RUNS_DIR",
    "RUN_KEY_LENGTH",
    "SMOKE_SUFFIX",
    "RunDirBusyError",
    "compute_run_key",
    "display_overrides",
    "hydra_task",
    "is_smoke",
    "job_dir",
    "lock_holder",
    "lock_run_dir",
    "main",
    "run_job",
    "run_tags",
    "semantic_config",
    "tail",
]


def main() -> None:
    """``python -m vice.job``: :func:`vice.launch.job.job_main`."""
    from vice.launch.job import job_main

    job_main()


if __name__ == "__main__":
    main()
