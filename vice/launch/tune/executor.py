"""Trials' jobs on submitit: the task a job runs, the executor of a launcher preset, an earlier job's handle."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from vice.config import Config

SUBMITIT_DIR = "submitit"


class TrialTask:
    """What a trial's submitit job runs: :func:`vice.launch.job.run_job`.

    On preemption or timeout submitit requeues it with the same config; the job resumes from its run
    dir's checkpoints and MLflow run.
    """

    def __call__(self, cfg: Config) -> dict[str, float]:
        """Train and evaluate ``cfg``; returns the final metrics (rank 0)."""
        from vice.launch.job import run_job

        return run_job(cfg)

    def checkpoint(self, cfg: Config) -> Any:
        """The requeue hook of submitit: the same task and config."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, cfg)


def executor_params(launcher: Mapping[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Translate a Hydra submitit launcher preset into submitit executor settings.

    Returns:
        ``(cluster, init kwargs, update_parameters kwargs)``; cluster is ``slurm`` or ``local``.
    """
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    cluster = "slurm" if str(launcher["_target_"]).endswith("SlurmLauncher") else "local"
    shared = set(OmegaConf.structured(BaseQueueConf).keys())
    init = (
        {f"{cluster}_max_num_timeout": launcher["max_num_timeout"]} if "max_num_timeout" in launcher else {}
    )
    update = {
        (key if key in shared else f"{cluster}_{key}"): value
        for key, value in launcher.items()
        if key not in ("_target_", "submitit_folder", "max_num_timeout") and value is not None
    }
    return cluster, init, update


def make_executor(launcher: Mapping[str, Any], folder: Path, name: str) -> tuple[str, Any]:
    """A submitit executor for the preset, writing its files to ``folder/%j``."""
    import submitit

    cluster, init, update = executor_params(launcher)
    executor = submitit.AutoExecutor(folder=str(folder / "%j"), cluster=cluster, **init)
    executor.update_parameters(**{**update, "name": name})
    return cluster, executor


def attach_job(cluster: str, folder: str, job_id: str) -> Any:
    """A submitit job handle from its folder and id (a trial of an earlier driver)."""
    import submitit
    from submitit.local.local import LocalJob

    if cluster == "slurm":
        return submitit.SlurmJob(folder=folder, job_id=job_id)
    return LocalJob(folder=folder, job_id=job_id)
