"""The driver: ``max_parallel`` trials always in flight; ask, submit, report, prune, collect, reconcile.

Optuna's public API is used throughout, but for one call: :func:`reconcile` rebuilds an
``optuna.trial.Trial`` for a RUNNING trial of an earlier driver from ``FrozenTrial._trial_id`` (Optuna
5 has no public way to report to, or prune, a trial that another process asked).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from vice.config import Config, to_config, validate
from vice.launch.job import tail
from vice.launch.sweep.compose import Composer, Job, error_message, launcher_world_size
from vice.launch.sweep.launch import job_overrides
from vice.launch.tracking.client import mlflow_client, with_retry
from vice.launch.tracking.identity import compute_run_key, job_dir
from vice.launch.tracking.names import RUN_ID_FILE
from vice.launch.tracking.params import override_value
from vice.launch.tune.executor import (
    SUBMITIT_DIR,
    TrialTask,
    attach_job,
    slurm_record_attrs,
    trial_job_is_ours,
)
from vice.launch.tune.space import suggest, trial_overrides
from vice.launch.tune.study import StudyConfig, StudyError

log = logging.getLogger(__name__)


#: Trial user attributes the driver keeps: where a trial's job and run dir are.
ATTR_JOB_ID, ATTR_FOLDER, ATTR_CLUSTER = "job_id", "submitit_folder", "cluster"

ATTR_RUN_DIR, ATTR_RUN_KEY, ATTR_ERROR = "run_dir", "run_key", "error"

ATTR_RETRY_OF, ATTR_PARENT_RUN = "retry_of", "mlflow_parent_run_id"

ATTR_FINAL_STEP = "final_step"

#: Lines of a failed job's traceback kept on its trial.
ERROR_LINES = 8


@dataclass
class InFlight:
    """A trial whose job is submitted and not collected yet."""

    trial: Any  # optuna.Trial
    job: Any  # submitit.Job
    run_dir: Path
    last_step: int = -1
    tagged: bool = False
    final_step: int | None = None  # train.max_steps: the job's final evaluation, never an intermediate one


@dataclass
class StudySession:
    """A study ready to drive: its Optuna study, configs, tracking and executor."""

    name: str
    cfg: StudyConfig
    optuna_study: Any
    study_dir: Path
    composer: Composer
    master: DictConfig
    task_overrides: list[str]
    tracking_uri: str
    parent_run_id: str
    cluster: str
    executor: Any
    in_flight: list[InFlight] = field(default_factory=list)


def _counts(study: Any) -> dict[str, int]:
    from optuna.trial import TrialState

    counts = {state.name: 0 for state in TrialState}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] += 1
    return counts


def finished_count(study: Any) -> int:
    """Trials that count toward the total: complete and pruned ones."""
    counts = _counts(study)
    return counts["COMPLETE"] + counts["PRUNED"]


def trial_config(session: StudySession, values: Mapping[str, Any]) -> tuple[Config, Path]:
    """Compose and validate a trial's config; give it its run dir and tracking.

    Raises:
        StudyError: the config does not compose or validate (naming the key).
    """
    base = [f"experiment={session.cfg.experiment}", *session.task_overrides, *trial_overrides(values)]
    try:
        cfg = to_config(session.composer.compose(base))
        validate(cfg)
    except Exception as error:
        raise StudyError(
            f"trial overrides [{' '.join(base[1:])}] do not compose: {error_message(error)}"
        ) from error
    key = compute_run_key(cfg, launcher_world_size(session.master.hydra.launcher))
    run_dir = job_dir(session.study_dir.parent, session.name, key)
    job = Job(0, tuple(base[1:]), cfg, key, run_dir)
    full = [
        *job_overrides(job, session.cfg.experiment, session.tracking_uri, session.parent_run_id, session.name)
    ]
    full.append(f"tracking.experiment={session.name}")
    final = to_config(session.composer.compose(full))
    return final, run_dir


def _set_attrs(trial: Any, attrs: Mapping[str, Any]) -> None:
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


def _tag_run(session: StudySession, run_id: str, number: int, params: Mapping[str, Any], state: str) -> None:
    """Tag a trial's MLflow run with the study, trial number, state and params, in one batch write."""
    from mlflow.entities import RunTag

    tags = {
        "optuna.study": session.name,
        "optuna.trial": str(number),
        "optuna.state": state,
        "mlflow.runName": f"trial {number}",
        **{f"optuna.param.{key}": override_value(value) for key, value in params.items()},
    }
    client = mlflow_client(session.tracking_uri)
    with_retry(lambda: client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()]))


def _run_id(run_dir: Path) -> str | None:
    """The MLflow run id a job wrote into its run dir; None before the job created its run."""
    id_file = run_dir / RUN_ID_FILE
    return id_file.read_text().strip() if id_file.exists() else None


def _mlflow_tags(session: StudySession, flight: InFlight, state: str) -> None:
    """Tag a trial's MLflow run (once its job created it); see :func:`_tag_run`."""
    run_id = _run_id(flight.run_dir)
    if run_id is None:
        return
    _tag_run(session, run_id, flight.trial.number, flight.trial.params, state)
    flight.tagged = True


def sync_tags(session: StudySession) -> int:
    """Re-tag the runs whose ``optuna.state`` lags their trial's state; returns how many were fixed.

    A driver killed between telling Optuna and tagging MLflow leaves a finished trial's run tagged
    RUNNING. A run belongs to the last trial that submitted a job for it (a retried trial resumes the
    run of the failed one); runs whose last trial is still running are left to :func:`collect`.
    """
    from optuna.trial import TrialState

    last: dict[str, Any] = {}
    for trial in sorted(session.optuna_study.get_trials(deepcopy=False), key=lambda t: t.number):
        run_id = _run_id(Path(trial.user_attrs[ATTR_RUN_DIR])) if ATTR_JOB_ID in trial.user_attrs else None
        if run_id is not None:
            last[run_id] = trial
    client, fixed = mlflow_client(session.tracking_uri), 0
    for run_id, trial in last.items():
        if trial.state == TrialState.RUNNING:
            continue
        run = with_retry(partial(client.get_run, run_id))
        if run.data.tags.get("optuna.state") != trial.state.name:
            _tag_run(session, run_id, trial.number, trial.params, trial.state.name)
            fixed += 1
    return fixed


def submit_trial(session: StudySession) -> InFlight | None:
    """Ask a trial, compose its config and submit its job; None when it was answered without a job.

    A trial whose config is the one of a complete trial (same run key) gets that trial's value.
    """
    from optuna.trial import TrialState

    trial = session.optuna_study.ask()
    values = suggest(trial, session.cfg.params)
    try:
        cfg, run_dir = trial_config(session, values)
    except StudyError as error:
        _set_attrs(trial, {ATTR_ERROR: str(error)})
        session.optuna_study.tell(trial, state=TrialState.FAIL)
        log.error("trial %d: %s", trial.number, error)
        return None
    done = [
        t
        for t in session.optuna_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.user_attrs.get(ATTR_RUN_KEY) == run_dir.name
    ]
    _set_attrs(trial, {ATTR_RUN_DIR: str(run_dir), ATTR_RUN_KEY: run_dir.name})
    if done:
        log.info("trial %d has the config of trial %d: same value", trial.number, done[0].number)
        session.optuna_study.tell(trial, done[0].value)
        return None
    busy = [f for f in session.in_flight if f.run_dir == run_dir]
    if busy:
        _set_attrs(
            trial,
            {ATTR_ERROR: f"same config as running trial {busy[0].trial.number}"},
        )
        session.optuna_study.tell(trial, state=TrialState.FAIL)
        return None
    job = session.executor.submit(TrialTask(), cfg)
    folder = str(session.study_dir / SUBMITIT_DIR / "%j")
    _set_attrs(
        trial,
        {
            ATTR_JOB_ID: str(job.job_id),
            ATTR_FOLDER: folder,
            ATTR_CLUSTER: session.cluster,
            ATTR_FINAL_STEP: cfg.train.max_steps,
        },
    )
    if session.cluster == "slurm":  # after the id is stored: a driver killed while asking SLURM keeps it
        _set_attrs(trial, slurm_record_attrs(str(job.job_id)))
    log.info("trial %d: job %s [%s]", trial.number, job.job_id, " ".join(trial_overrides(values)))
    return InFlight(trial, job, run_dir, final_step=cfg.train.max_steps)


def _retry(session: StudySession, number: int, params: Mapping[str, Any]) -> None:
    session.optuna_study.enqueue_trial(dict(params), user_attrs={ATTR_RETRY_OF: number}, skip_if_exists=False)


def collect(session: StudySession, flight: InFlight) -> None:
    """Tell Optuna how a finished job ended.

    A value: COMPLETE. An exception in the job: FAIL with the traceback's end. No result (cancelled,
    killed, node failure): FAIL, and the same parameters are asked again (the job resumes).
    """
    from optuna.trial import TrialState
    from submitit.core.utils import FailedJobError, UncompletedJobError

    study, trial = session.optuna_study, flight.trial
    try:
        metrics = flight.job.result()
    except FailedJobError as error:
        _set_attrs(trial, {ATTR_ERROR: tail(str(error), ERROR_LINES)})
        study.tell(trial, state=TrialState.FAIL)
        log.error("trial %d failed in its job:\n%s", trial.number, tail(str(error), ERROR_LINES))
        _mlflow_tags(session, flight, "FAIL")
        return
    except UncompletedJobError as error:
        _set_attrs(trial, {ATTR_ERROR: tail(str(error), ERROR_LINES)})
        study.tell(trial, state=TrialState.FAIL)
        _retry(session, trial.number, trial.params)
        log.warning(
            "trial %d: job %s ended without a result; asking its params again",
            trial.number,
            flight.job.job_id,
        )
        _mlflow_tags(session, flight, "FAIL")
        return
    value = (metrics or {}).get(session.cfg.metric)
    if value is None or not math.isfinite(value):
        reason = f"the job's metrics have no finite {session.cfg.metric} (got {sorted(metrics or {})}): check eval.enabled and the metric name"
        _set_attrs(trial, {ATTR_ERROR: reason})
        study.tell(trial, state=TrialState.FAIL)
        log.error("trial %d: %s", trial.number, reason)
        _mlflow_tags(session, flight, "FAIL")
        return
    study.tell(trial, float(value))
    log.info("trial %d: %s = %.4f", trial.number, session.cfg.metric, value)
    _mlflow_tags(session, flight, "COMPLETE")


def report_intermediate(session: StudySession, flight: InFlight, may_prune: bool = True) -> bool:
    """Report the job's new intermediate evaluations to its trial; cancel it when the pruner says so.

    The final evaluation (logged at ``train.max_steps`` under the same metric) is the trial's value,
    not an intermediate one: it is never reported, so a finished trial cannot be pruned. With
    ``may_prune`` False (a job already done) the values are only reported, for later trials' medians.

    Returns:
        True when the trial was pruned (its job cancelled, the trial told PRUNED).
    """
    from optuna.trial import TrialState

    run_id = _run_id(flight.run_dir)
    if run_id is None:
        return False
    if not flight.tagged:
        _mlflow_tags(session, flight, "RUNNING")
    client = mlflow_client(session.tracking_uri)
    history = with_retry(lambda: client.get_metric_history(run_id, session.cfg.metric))
    final = flight.final_step if flight.final_step is not None else math.inf
    new = sorted((m.step, m.value) for m in history if flight.last_step < m.step < final)
    for step, value in new:
        flight.trial.report(value, step)
        flight.last_step = step
    if may_prune and new and flight.trial.should_prune():
        flight.job.cancel(check=False)
        session.optuna_study.tell(flight.trial, state=TrialState.PRUNED)
        log.info("trial %d pruned at step %d", flight.trial.number, flight.last_step)
        _mlflow_tags(session, flight, "PRUNED")
        return True
    return False


def reconcile(session: StudySession) -> list[InFlight]:
    """Match the RUNNING trials of an earlier driver with their jobs.

    A live SLURM job is adopted; a finished one is collected; a trial with no job, or a job that is
    gone, is marked FAIL and its parameters asked again (a local job dies with its driver's session; a
    SLURM id that now names another job, :func:`trial_job_is_ours`, counts as gone).
    """
    import optuna
    from optuna.trial import TrialState

    study = session.optuna_study
    adopted: list[InFlight] = []
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = frozen.user_attrs
        trial = optuna.trial.Trial(study, frozen._trial_id)  # no public API: see the module docstring
        job_id = attrs.get(ATTR_JOB_ID)
        if job_id is None:
            study.tell(trial, state=TrialState.FAIL)
            _retry(session, frozen.number, frozen.params)
            continue
        job = attach_job(attrs[ATTR_CLUSTER], attrs[ATTR_FOLDER], job_id)
        flight = InFlight(
            trial,
            job,
            Path(attrs[ATTR_RUN_DIR]),
            max(frozen.intermediate_values, default=-1),
            final_step=attrs.get(ATTR_FINAL_STEP),
        )
        slurm, has_result = attrs[ATTR_CLUSTER] == "slurm", job.paths.result_pickle.exists()
        lost = None  # why the job cannot be this trial's any more, unless it left its result
        if not slurm:
            lost = "a local job dies with its driver"
        elif not trial_job_is_ours(attrs):
            lost = "its SLURM id now names another job"
        if lost and not has_result:
            study.tell(trial, state=TrialState.FAIL)
            _retry(session, frozen.number, frozen.params)
            log.warning(
                "trial %d: job %s of an earlier driver: %s; asking again", frozen.number, job_id, lost
            )
        elif slurm and not lost and not job.done():
            log.info("trial %d: adopting running job %s", frozen.number, job_id)
            adopted.append(flight)
        else:
            collect(session, flight)
    return adopted


def drive(session: StudySession) -> None:
    """Keep ``max_parallel`` trials in flight until ``n_trials`` are complete or pruned.

    Raises:
        StudyError: more than ``max_failures`` failed trials.
    """
    session.in_flight = reconcile(session)
    fixed = sync_tags(session)
    if fixed:
        log.info("re-tagged %d MLflow run(s) of trials finished by an earlier driver", fixed)
    while True:
        target = session.cfg.n_trials - finished_count(session.optuna_study)
        while len(session.in_flight) < min(session.cfg.max_parallel, target):
            failed = _counts(session.optuna_study)["FAIL"]
            if failed > session.cfg.max_failures:
                raise StudyError(
                    f"{failed} trials failed (max_failures={session.cfg.max_failures}): see the trials' `error` "
                    f"attributes (optuna.load_study(...).trials) and their run dirs under {session.study_dir}"
                )
            flight = submit_trial(session)
            target = session.cfg.n_trials - finished_count(session.optuna_study)
            if flight is not None:
                session.in_flight.append(flight)
        if not session.in_flight:
            return
        time.sleep(session.cfg.poll_s)
        still: list[InFlight] = []
        for flight in session.in_flight:
            if flight.job.done():  # first: a finished trial is collected, never pruned
                report_intermediate(session, flight, may_prune=False)
                collect(session, flight)
            elif not report_intermediate(session, flight):
                still.append(flight)
        session.in_flight = still
