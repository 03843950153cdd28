"""One sweep job: train, evaluate, and record both in the job's MLflow run (``python -m vice.launch.job``).

A job is identified by its run key (:mod:`vice.launch.tracking.identity`); ``vice-sweep`` gives it the
deterministic run dir ``<output dir>/<experiment>/runs/<run_key>``, where a requeued, preempted or
re-submitted job finds its checkpoints and its MLflow run id and continues both.

Life cycle of :func:`run_job` (only rank 0 of a DDP job logs, checkpoints or writes files):

1. validate the config, check the run dir matches the run key, and lock the run dir (:func:`lock_run_dir`):
   a second job for the same run dir (submitted twice) fails at once, changing nothing;
2. open (or re-attach to) the MLflow child run under the sweep's parent, log the flattened config;
3. train, with intermediate evaluations every ``train.eval_every`` steps;
4. evaluate the final model, log the metrics, the evaluation tags and the pictures;
5. log the resolved config and the final checkpoint path, and close the run FINISHED.

The run's artifacts: ``config.yaml``; ``eval/step_<step>/`` (``metrics.json`` and the pictures of every
evaluation, intermediate ones included); ``logs/`` (the job's own log files: submitit's stdout and
stderr, which hold the training log, and Hydra's job log); and ``checkpoint_path.txt``. Checkpoints are
not uploaded (hundreds of MB each): they stay in the run dir, named by the ``checkpoint_path`` tag and by
``checkpoint_path.txt``, which says so.

An exception closes the run FAILED (its logs uploaded) and leaves ``error.txt`` (traceback and log paths)
in the run dir for ``vice-sweep``'s failure summary; a signal exit (preemption, ``scancel``) closes it KILLED,
and the requeued or re-submitted job sets it back to RUNNING.

Torch, MLflow and the evaluation are imported inside functions: submitit pickles the task function
with cloudpickle, and ``vice-sweep`` imports this module only to name it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from omegaconf import DictConfig, OmegaConf

from vice.config import Config, to_config, validate
from vice.io import LockHeldError, lock_file
from vice.launch.job_logs import CHECKPOINT_PATH_FILE, checkpoint_path_text, log_job_logs, log_paths
from vice.launch.overrides import display_overrides
from vice.launch.tracking.client import credentials_to_environment, resolve_tracking_uri
from vice.launch.tracking.identity import DEFAULT_OUTPUT_DIR, compute_run_key, is_smoke
from vice.launch.tracking.names import NUM_IMAGES_METRIC, RUN_ID_FILE
from vice.launch.tracking.params import flatten_config
from vice.redact import redact_uri
from vice.run_logger import NullLogger, RunLogger

log = logging.getLogger(__name__)

#: Files a job leaves in its run dir.
CONFIG_FILE = "config.yaml"
LOCK_FILE = "job.lock"
ERROR_FILE = "error.txt"
#: Traceback lines kept in the run's ``error`` tag.
ERROR_TAG_LINES = 20


class RunDirBusyError(RuntimeError):
    """Another live job holds the run dir's lock (the same job was submitted twice)."""


def lock_holder(environ: Mapping[str, str] | None = None) -> str:
    """Who this process is, as written into the lock file: host, pid, SLURM job (if any), start time."""
    env = os.environ if environ is None else environ
    if "SLURM_ARRAY_JOB_ID" in env and "SLURM_ARRAY_TASK_ID" in env:
        slurm = f"SLURM job {env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    elif "SLURM_JOB_ID" in env:
        slurm = f"SLURM job {env['SLURM_JOB_ID']}"
    else:
        slurm = "no SLURM job"
    since = time.strftime("%Y-%m-%d %H:%M:%S")
    return f"host {socket.gethostname()}, pid {os.getpid()}, {slurm}, since {since}"


def lock_run_dir(run_dir: Path) -> IO[str]:
    """Take the run dir's exclusive lock for as long as the returned file stays open, or fail at once.

    The lock is :func:`vice.io.lock_file` on ``<run_dir>/job.lock``: the kernel drops it when the process
    ends, however it ends, so a stale file never blocks a resubmitted job. The file names the last holder
    (:func:`lock_holder`) for the error of a job that finds the lock taken.

    Args:
        run_dir: the job's run dir (created if missing).

    Returns:
        The open lock file; closing it releases the lock.

    Raises:
        RunDirBusyError: another process holds the lock; nothing in the run dir was changed.
    """
    path = run_dir / LOCK_FILE
    try:
        return lock_file(path, lock_holder())
    except LockHeldError as error:
        raise RunDirBusyError(
            f"run dir {run_dir} is in use by another job ({error.holder}): the same job was submitted twice. "
            f"This one changed nothing; let the other finish, or cancel it and re-run vice-sweep "
            f"(lock: {path})"
        ) from None


def mlflow_experiment(cfg: Config) -> str:
    """The MLflow experiment a job logs to: ``tracking.experiment``, else the experiment's name."""
    return cfg.tracking.experiment or cfg.experiment


def run_tags(cfg: Config, run_key: str) -> dict[str, str]:
    """The sweep tags of a job's run (docs/architecture.md) plus its log paths."""
    tags = {"experiment": cfg.experiment, "run_key": run_key, "smoke": str(is_smoke(cfg.experiment)).lower()}
    if cfg.tracking.sweep_id is not None:
        tags["sweep_id"] = cfg.tracking.sweep_id
    if cfg.tracking.parent_run_id is not None:
        tags["mlflow.parentRunId"] = cfg.tracking.parent_run_id  # a re-run moves under the new sweep
    return {**tags, **log_paths()}


def _run_name(run_key: str) -> str:
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        shown = display_overrides(HydraConfig.get().overrides.task)
        if shown:
            return " ".join(shown)
    return run_key


def _open_logger(cfg: Config, run_key: str, tracking_uri: str) -> RunLogger:
    """The job's MLflow run (created, or re-attached through ``<run_dir>/mlflow_run_id``)."""
    from vice.launch.tracking.write import open_run

    reattached = (Path(cfg.run_dir) / RUN_ID_FILE).exists()
    logger = open_run(
        tracking_uri,
        mlflow_experiment(cfg),
        cfg.run_dir,
        parent_run_id=cfg.tracking.parent_run_id,
        run_name=_run_name(run_key),
        tags=run_tags(cfg, run_key),
    )
    params = flatten_config(cfg)
    if reattached:  # MLflow refuses to change a param: log only what the first attempt did not
        logged = logger.client.get_run(logger.run_id).data.params
        params = {key: value for key, value in params.items() if key not in logged}
    logger.log_params(params)
    return logger


def tail(text: str, num_lines: int) -> str:
    """The last ``num_lines`` non-empty lines of ``text``."""
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-num_lines:])


def _record_failure(run_dir: Path, logger: RunLogger, error: BaseException) -> None:
    """Record ``error`` and close the run FAILED, never masking ``error``.

    ``error.txt`` gets the traceback and the log paths; the run's ``error`` tag the traceback's end.
    """
    trace = redact_uri("".join(traceback.format_exception(error)))
    where = "".join(f"{name}: {path}\n" for name, path in log_paths().items())
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / ERROR_FILE).write_text(trace + where)
        logger.set_tags({"error": tail(trace, ERROR_TAG_LINES)})
        log_job_logs(logger, log_paths())
        logger.close("FAILED")
    except Exception:
        log.exception("could not record the failure of %s", run_dir)


def _close_quietly(logger: RunLogger, status: str) -> None:
    try:
        logger.close(status)
    except Exception:
        log.exception("could not mark the run %s", status)


def _log_outputs(cfg: Config, logger: RunLogger, run_dir: Path, resumed_from: int) -> None:
    """Log the resolved config and the final checkpoint's path (as a tag and an artifact, not the file)."""
    from vice.checkpoint import list_checkpoints

    logger.log_artifact(run_dir / CONFIG_FILE)
    checkpoints = list_checkpoints(run_dir)
    tags = {"resumed_from_step": str(resumed_from)}
    if checkpoints:
        final = checkpoints[-1].resolve()
        (run_dir / CHECKPOINT_PATH_FILE).write_text(checkpoint_path_text(final))
        logger.log_artifact(run_dir / CHECKPOINT_PATH_FILE)
        tags["checkpoint_path"] = str(final)
    logger.set_tags(tags)


def _train_and_evaluate(cfg: Config, logger: RunLogger, main_process: bool) -> dict[str, float]:
    from vice.dist import cleanup
    from vice.evaluate.harness import EVAL_DIR
    from vice.train import train

    run_dir = Path(cfg.run_dir)
    eval_dir = run_dir / EVAL_DIR
    evaluate_ = None
    if main_process and cfg.eval.enabled:
        from vice.evaluate.harness import build_evaluator

        evaluate_ = build_evaluator(cfg, eval_dir)
    intermediate = evaluate_ if cfg.train.eval_every else None
    if main_process:
        from vice.data.train import build_image_source

        logger.log_metrics({NUM_IMAGES_METRIC: float(len(build_image_source(cfg)))}, step=0)
    result = train(cfg, logger, intermediate)
    cleanup()  # the other ranks are done; rank 0 evaluates alone
    if not main_process:
        return {}
    _log_outputs(cfg, logger, run_dir, result.resumed_from)
    if evaluate_ is None:
        return {}
    from vice.evaluate.run import eval_tags

    metrics = evaluate_(result.embedder, result.steps)
    logger.log_metrics(metrics, step=result.steps)
    dataset = cfg.eval.dataset or cfg.data.name
    logger.set_tags(eval_tags(cfg.eval, dataset, cfg.data.split_set, cfg.eval.mapping_fit_set))
    for step_dir in sorted(eval_dir.glob("step_*")):  # every evaluation's pictures, the final one last
        logger.log_artifact(step_dir, EVAL_DIR)
    return metrics


def _stop_if_busy(busy: RunDirBusyError | None, run_dir: Path, device_name: str) -> None:
    """Raise ``busy`` on every rank of the job when rank 0 found the run dir locked by another job.

    Only rank 0 writes into the run dir, so only it locks; the ranks then join the job's process group
    (which the trainer joins anyway) and agree, so that a duplicate job's other ranks stop with its rank
    0 instead of waiting for it in the rendezvous.

    Args:
        busy: rank 0's error from :func:`lock_run_dir`; None when it holds the lock, and on other ranks.
        run_dir: the job's run dir, for the other ranks' message.
        device_name: ``train.device``, which picks the process group's backend.
    """
    from vice.dist import any_rank, cleanup, init_distributed, resolve_device

    device = resolve_device(device_name)
    init_distributed(device.type)
    if any_rank(busy is not None, device):
        cleanup()
        raise busy or RunDirBusyError(
            f"rank 0 found run dir {run_dir} in use by another job (its error names the holder): this rank "
            "stops with it"
        )


def _credentials_to_environment(cfg: Config) -> Config:
    """``cfg`` with the tracking URI's credentials moved into MLflow's environment variables.

    Everything the job saves, logs or passes on (``config.yaml``, params, checkpoints) then holds no secret.
    """
    uri = cfg.tracking.tracking_uri
    if uri is None:
        return cfg
    clean = credentials_to_environment(uri)
    return (
        cfg
        if clean == uri
        else dataclasses.replace(cfg, tracking=dataclasses.replace(cfg.tracking, tracking_uri=clean))
    )


def _tracking_uri(cfg: Config) -> str:
    """The store the job logs to, resolved once (under ``vice-sweep`` it arrives absolute already)."""
    return resolve_tracking_uri(cfg.tracking.tracking_uri, DEFAULT_OUTPUT_DIR)


def run_job(cfg: Config) -> dict[str, float]:
    """Train and evaluate one job, recording it in its MLflow run; resumes from ``cfg.run_dir``.

    Args:
        cfg: the job's full config; under ``vice-sweep`` its ``run_dir`` ends in its run key and
            ``tracking`` names the store, the parent run and the sweep.

    Returns:
        The final evaluation metrics on rank 0 (empty with ``eval.enabled=false`` and on other ranks).

    Raises:
        RuntimeError: the run dir is not the one of this config's run key (the job's config differs
            from the one ``vice-sweep`` validated).
        RunDirBusyError: another live job holds the run dir (:func:`lock_run_dir`); this one changed
            nothing, neither the checkpoints nor the MLflow run.
    """
    from vice.dist import read_dist_env

    validate(cfg)
    cfg = _credentials_to_environment(cfg)
    dist_env = read_dist_env()
    run_key = compute_run_key(cfg, dist_env.world_size)
    run_dir = Path(cfg.run_dir)
    if cfg.tracking.sweep_id is not None and run_dir.name != run_key:
        raise RuntimeError(
            f"run_dir={run_dir} was planned for run key {run_dir.name}, but this job (world size "
            f"{dist_env.world_size}) has run key {run_key}: the config composed differently in the job than in "
            "vice-sweep (an environment variable or a config file changed in between?); re-run vice-sweep"
        )
    main_process = dist_env.rank == 0
    lock: IO[str] | None = None
    busy: RunDirBusyError | None = None
    if main_process:
        try:
            lock = lock_run_dir(run_dir)
        except RunDirBusyError as error:
            busy = error
    logger: RunLogger = NullLogger()
    try:
        try:
            if lock is not None:
                (run_dir / CONFIG_FILE).write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
                (run_dir / ERROR_FILE).unlink(missing_ok=True)
                if cfg.tracking.enabled:
                    logger = _open_logger(cfg, run_key, _tracking_uri(cfg))
            _stop_if_busy(busy, run_dir, cfg.train.device)
            metrics = _train_and_evaluate(cfg, logger, main_process)
        except RunDirBusyError:  # the other job's run dir and MLflow run stay as they are
            raise
        except Exception as error:
            log.exception("job %s failed", run_dir)
            if main_process:
                _record_failure(run_dir, logger, error)
            raise
        except BaseException:  # a signal exit: a requeued or re-submitted job re-attaches to the run
            if main_process:
                _close_quietly(logger, "KILLED")
            raise
        if main_process:
            log_job_logs(logger, log_paths())
            logger.close("FINISHED")
        return metrics
    finally:
        if lock is not None:
            lock.close()


def hydra_task(raw: DictConfig) -> dict[str, float]:
    """The Hydra task function every sweep job runs (what hydra-submitit-launcher pickles)."""
    from vice.redact import redact_hydra_output

    redact_hydra_output()
    return run_job(to_config(raw))


def _job(config: Config) -> None:
    """The task of :func:`job_main`: run one job, print its metrics and run dir."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.get().mode == RunMode.MULTIRUN and config.tracking.sweep_id is None:
        raise ValueError(
            "every job of a plain multirun would share run_dir: run sweeps with "
            "`vice-sweep EXPERIMENT [overrides]`, which gives each job its own"
        )
    metrics = run_job(config)
    print("\n".join(f"{key} = {value:.4f}" for key, value in sorted(metrics.items())))
    print(f"run dir: {config.run_dir}")


def job_main() -> None:
    """``python -m vice.launch.job experiment=demo``: one sweep job, recorded in MLflow."""
    from vice.launch.app import PROGRAMS, run_app

    run_app(PROGRAMS["job"], _job)


if __name__ == "__main__":
    job_main()
