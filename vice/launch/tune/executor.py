"""Trials' jobs on submitit: the task, the executor of a launcher preset, an earlier job's handle, its owner.

Whose a SLURM job id is: job ids restart at 1 when a cluster's state is reset, so a trial records the
name, user and submit time of the job it submitted (:func:`slurm_record_attrs`) and checks them before
adopting the job again (:func:`trial_job_is_ours`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from vice.config import Config
from vice.launch.sweep.slurm import SlurmQueryError, SlurmRecord, is_ours, query_slurm_records

log = logging.getLogger(__name__)

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


#: The trial attr that records the SLURM job a trial submitted (JSON of a :class:`SlurmRecord`).
ATTR_SLURM_RECORD = "slurm_record"
RecordQuery = Callable[[Sequence[str]], dict[str, SlurmRecord]]


def slurm_record_attrs(job_id: str, query: RecordQuery = query_slurm_records) -> dict[str, str]:
    """The trial attrs that record a just-submitted SLURM job (name, user, submit time); {} if SLURM is mute."""
    try:
        found = query([job_id]).get(job_id)
    except SlurmQueryError as error:
        log.warning(
            "job %s: SLURM did not say who submitted it (%s); its id alone will name it", job_id, error
        )
        return {}
    return {} if found is None else {ATTR_SLURM_RECORD: json.dumps(asdict(replace(found, state="")))}


def trial_job_is_ours(attrs: Mapping[str, Any], query: RecordQuery = query_slurm_records) -> bool:
    """Whether the SLURM job under a trial's recorded id is still the one it submitted.

    Job ids restart at 1 when a cluster's state is reset: an unrelated job that took the id has
    another name, user or a later submit time (:func:`vice.launch.sweep.slurm.is_ours`). A trial
    recorded without a record, or a SLURM that does not answer, keeps the id's word (True).
    """
    raw = attrs.get(ATTR_SLURM_RECORD)
    if raw is None:
        return True
    recorded = SlurmRecord(**json.loads(raw))
    try:
        found = query([recorded.job_id]).get(recorded.job_id)
    except SlurmQueryError:
        return True
    return is_ours(recorded, found)
