"""A job's log files and checkpoint note, as artifacts of its MLflow run (see :mod:`vice.launch.job`).

The run's ``logs/`` folder holds the job's own log files (submitit's stdout and stderr, which hold the
training log, and Hydra's job log); ``checkpoint_path.txt`` names the final checkpoint and says it is
not uploaded (hundreds of MB: it stays in the run dir).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

from vice.run_logger import RunLogger

CHECKPOINT_PATH_FILE = "checkpoint_path.txt"
#: What ``checkpoint_path.txt`` says under the path: the checkpoint itself is not an artifact.
CHECKPOINT_NOTE = (
    "The checkpoint is not uploaded to MLflow: it stays at the path above, in the job's run dir. "
    "Evaluate it with `vice-eval eval.checkpoint=<path>`."
)
#: Artifact folder of a job's run holding its log files (:func:`log_paths`).
LOGS_ARTIFACT_DIR = "logs"


def log_paths() -> dict[str, str]:
    """Where this job's output goes: submitit's stdout/stderr files and Hydra's job log, when set."""
    paths: dict[str, str] = {}
    try:
        import submitit

        job_paths = submitit.JobEnvironment().paths
        paths["log_path"] = str(job_paths.stdout).replace("%t", "0")
        paths["err_path"] = str(job_paths.stderr).replace("%t", "0")
    except RuntimeError:  # not inside a submitit job
        pass
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        paths["hydra_log_path"] = str(Path(hydra_cfg.runtime.output_dir) / f"{hydra_cfg.job.name}.log")
    return paths


def existing_logs(paths: Mapping[str, str]) -> list[Path]:
    """The files of :func:`log_paths` that exist, in order (a job outside submitit and Hydra has none)."""
    return [Path(path) for path in paths.values() if Path(path).is_file()]


def log_job_logs(logger: RunLogger, paths: Mapping[str, str]) -> None:
    """Upload the job's log files (``paths``, from :func:`log_paths`) to its run, under ``logs/``.

    Each is a snapshot taken now (after flushing this process's stdout and stderr, which submitit writes
    to those files): a log that a requeued job appends to is uploaded again when that job ends.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    for path in existing_logs(paths):
        logger.log_artifact(path, LOGS_ARTIFACT_DIR)


def checkpoint_path_text(checkpoint: Path) -> str:
    """What ``checkpoint_path.txt`` holds: the checkpoint's path, then :data:`CHECKPOINT_NOTE`."""
    return f"{checkpoint}\n{CHECKPOINT_NOTE}\n"
