"""``vice-tune``: a hyperparameter study with Optuna, ``max_parallel`` trials always in flight on SLURM.

Usage::

    vice-tune STUDY [--output-dir DIR] [--storage PATH|URL] [--launcher PRESET] [--n-trials N]
              [--max-parallel N] [--poll-s S] [overrides ...]

``STUDY`` names a file in ``sweeps/study/`` (``appendix_b``, ``smoke``) or is a path to one. A study file
holds the base experiment, fixed overrides, the search space, the sampler and pruner, the direction,
the objective metric, ``n_trials`` (a *total*), ``max_parallel`` and the launcher preset.

How it runs (this process is the study's only Optuna writer; keep it alive, e.g. in tmux):

- **No batch barrier.** The driver asks Optuna for a trial, composes and validates its config like
  ``vice-sweep`` does, and submits :func:`vice.job.run_job` through submitit; it polls the jobs and asks
  for the next trial as soon as any ends, so ``max_parallel`` trials are always running.
- **Storage.** ``JournalStorage(JournalFileBackend(<output dir>/tune_<study>/optuna.journal))`` by
  default, or an RDB URL (``postgresql://...``); never SQLite. ``--storage`` wins over
  ``$VICE_OPTUNA_STORAGE`` (which keeps a password off the command line), which wins over the study's
  ``storage``.
- **Resume.** Re-running the same study continues toward ``n_trials`` complete (or pruned) trials.
  RUNNING trials of a dead driver are matched with their SLURM jobs: a live job is adopted, a finished
  one collected; a job that is gone (cancelled, node failure, or a local job of a dead driver) marks
  the trial FAIL and its parameters are asked again, and the new job resumes from the checkpoints
  and the MLflow run of the same run dir (its run key depends only on the config).
- **Pruning.** Jobs with ``train.eval_every`` log intermediate evaluations to MLflow; the driver
  reports them to the trial and cancels the job when the pruner says so.
- **Tracking.** One MLflow experiment ``tune_<study>``; a parent run per study; each trial is a
  child run, tagged with the trial number, state and parameters. At the end the best trial is
  written as a ready-to-run experiment file, and the optimisation history and parameter importances
  are saved as PNGs and logged on the parent run.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import math
import os
import re
import socket
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import yaml
from omegaconf import MISSING, DictConfig, OmegaConf

from vice.app import SWEEPS_DIR
from vice.config import Config, to_config, validate
from vice.job import DEFAULT_OUTPUT_DIR, compute_run_key, is_smoke, job_dir, tail
from vice.redact import redact_logs, redact_uri
from vice.sweep import (
    SMOKE_SUFFIX,
    TRACKING_URI_KEY,
    Composer,
    Job,
    SweepError,
    _quoted,
    check_inputs,
    choose_launcher,
    drop_tracking_uri,
    error_message,
    experiment_name,
    job_overrides,
    split_overrides,
)

log = logging.getLogger(__name__)

STUDIES_DIR = SWEEPS_DIR / "study"
#: Prefix of a study's id: its Optuna study name, MLflow experiment and output folder.
STUDY_PREFIX = "tune_"
JOURNAL_FILE = "optuna.journal"
LOCK_FILE = "driver.lock"
SUBMITIT_DIR = "submitit"
HISTORY_PNG = "optimization_history.png"
IMPORTANCES_PNG = "param_importances.png"
TRIALS_CSV = "trials.csv"
PARAM_TYPES = ("float", "int", "categorical")
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "none")
DIRECTIONS = ("maximize", "minimize")
RDB_SCHEMES = ("postgresql", "mysql")
#: The storage URL when ``--storage`` is not given (before the study file's ``storage``): keeps an RDB
#: password off the command line, like Optuna's own ``OPTUNA_STORAGE``.
STORAGE_ENV = "VICE_OPTUNA_STORAGE"
#: What to install for an RDB scheme's driver.
RDB_DRIVERS = {
    "postgresql": "pip install 'vice[postgres]'",
    "mysql": "pip install pymysql (mysql+pymysql://)",
}
#: Trial user attributes the driver keeps: where a trial's job and run dir are.
ATTR_JOB_ID, ATTR_FOLDER, ATTR_CLUSTER = "job_id", "submitit_folder", "cluster"
ATTR_RUN_DIR, ATTR_RUN_KEY, ATTR_ERROR = "run_dir", "run_key", "error"
ATTR_RETRY_OF, ATTR_PARENT_RUN = "retry_of", "mlflow_parent_run_id"
ATTR_FINAL_STEP = "final_step"
#: Lines of a failed job's traceback kept on its trial.
ERROR_LINES = 8


class StudyError(ValueError):
    """Bad study input, found before anything was submitted; the message says how to fix it."""


# The study file -----------------------------------------------------------------------------------


@dataclass
class ParamConfig:
    """One searched config key.

    ``type: float|int`` draw from ``[low, high]`` (``log`` for a log scale, ``step`` for a grid);
    ``categorical`` picks one of ``choices`` (a list value such as ``[0.5, 2.0]`` is allowed). ``when``
    makes the key conditional: it is searched only when every named (earlier) key took one of the
    listed values, and otherwise keeps the base experiment's value.
    """

    type: str = "float"
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None
    when: dict[str, list[Any]] = field(default_factory=dict)


@dataclass
class SamplerConfig:
    """Optuna's sampler: ``tpe`` (multivariate, constant liar), ``random`` or ``grid`` (categoricals only)."""

    name: str = "tpe"
    seed: int | None = 0
    n_startup_trials: int = 10  # tpe: random trials before the model kicks in


@dataclass
class PrunerConfig:
    """Median pruning on the intermediate evaluations (jobs need ``train.eval_every > 0``)."""

    name: str = "median"
    n_startup_trials: int = 5  # trials that are never pruned
    n_warmup_steps: int = 0  # training steps before a trial can be pruned


@dataclass
class StudyConfig:
    """A study file of ``sweeps/study/``."""

    experiment: str = MISSING  # the base experiment (sweeps/experiment/); its sweep axes are not used
    overrides: list[str] = field(default_factory=list)  # fixed overrides of every trial
    params: dict[str, ParamConfig] = field(default_factory=dict)
    direction: str = "maximize"
    metric: str = "eval/linear_miou"
    n_trials: int = 20  # a total: a re-run continues toward it
    max_parallel: int = 2
    launcher: str = "auto"  # a preset of sweeps/hydra/launcher/, or auto (as vice-sweep)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    pruner: PrunerConfig = field(default_factory=PrunerConfig)
    storage: str | None = None  # None = <output dir>/tune_<study>/optuna.journal
    max_failures: int = 10  # stop after this many failed trials
    poll_s: float = 10.0  # seconds between job polls


def list_studies() -> list[str]:
    """Every study file in ``sweeps/study/``."""
    return sorted(p.stem for p in STUDIES_DIR.glob("*.yaml"))


def study_path(name: str) -> Path:
    """The study file for a name of ``sweeps/study/`` or a path.

    Raises:
        StudyError: no such file (the message lists the studies).
    """
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    if name in list_studies():
        return STUDIES_DIR / f"{name}.yaml"
    raise StudyError(
        f"no study {name!r} in {STUDIES_DIR}: one of {', '.join(list_studies())}, or a .yaml path"
    )


def _check(ok: bool, where: str, message: str) -> None:
    if not ok:
        raise StudyError(f"{where}: {message}")


def check_study(cfg: StudyConfig, where: str) -> None:
    """Check the values of a study file that types cannot express.

    Raises:
        StudyError: naming the file, the key and what is allowed.
    """
    _check(cfg.direction in DIRECTIONS, where, f"direction={cfg.direction!r} is not one of {DIRECTIONS}")
    _check(cfg.n_trials >= 1, where, f"n_trials={cfg.n_trials} must be >= 1")
    _check(cfg.max_parallel >= 1, where, f"max_parallel={cfg.max_parallel} must be >= 1")
    _check(cfg.max_failures >= 0, where, f"max_failures={cfg.max_failures} must be >= 0")
    _check(cfg.poll_s > 0, where, f"poll_s={cfg.poll_s} must be > 0")
    _check(cfg.sampler.name in SAMPLERS, where, f"sampler.name={cfg.sampler.name!r} is not one of {SAMPLERS}")
    _check(cfg.pruner.name in PRUNERS, where, f"pruner.name={cfg.pruner.name!r} is not one of {PRUNERS}")
    _check(bool(cfg.params), where, "params is empty: add at least one searched key")
    seen: list[str] = []
    for key, p in cfg.params.items():
        at = f"{where}: params.{key}"
        _check(p.type in PARAM_TYPES, at, f"type={p.type!r} is not one of {PARAM_TYPES}")
        if p.type == "categorical":
            _check(bool(p.choices), at, "a categorical needs a non-empty choices list")
        else:
            _check(
                p.low is not None and p.high is not None and p.low < p.high,
                at,
                f"a {p.type} needs low < high (got low={p.low}, high={p.high})",
            )
            _check(not p.log or (p.low or 0) > 0, at, "log=true needs low > 0")
            _check(not (p.log and p.step), at, "log and step cannot be combined")
        for other in p.when:
            _check(other in seen, at, f"when names {other!r}, which is not a param listed before {key}")
        if cfg.sampler.name == "grid":
            _check(
                p.type == "categorical" and not p.when,
                at,
                "the grid sampler takes unconditional categoricals only",
            )
        seen.append(key)


def corner_values(params: Mapping[str, ParamConfig]) -> dict[str, Any]:
    """Every parameter at its low value (numbers) or first choice (categoricals), conditions ignored."""
    values: dict[str, Any] = {}
    for key, p in params.items():
        if p.type == "categorical":
            values[key] = choice_token((p.choices or [None])[0])
        else:
            values[key] = int(p.low or 0) if p.type == "int" else float(p.low or 0)
    return values


def check_objective(cfg: StudyConfig, where: str, job: Config) -> None:
    """The metric is one the job logs, and the pruner has intermediate evaluations to work on.

    Raises:
        StudyError: naming the study file and the key.
    """
    _check(job.eval.enabled, where, f"metric={cfg.metric!r} comes from the evaluation: set eval.enabled=true")
    clusters = "|".join(str(c) for c in job.eval.num_clusters)
    pattern = rf"eval/(linear|cluster({clusters})_(hungarian|majority))_(miou|acc)"
    _check(
        re.fullmatch(pattern, cfg.metric) is not None,
        where,
        f"metric={cfg.metric!r} is not logged by these jobs: one of eval/linear_{{miou,acc}} or "
        f"eval/cluster<C>_{{hungarian,majority}}_{{miou,acc}} with C in eval.num_clusters={list(job.eval.num_clusters)}",
    )
    _check(
        cfg.pruner.name != "median" or job.train.eval_every > 0,
        where,
        "pruner.name=median needs intermediate evaluations: set train.eval_every > 0 in overrides",
    )


def check_search_space(cfg: StudyConfig, where: str, composer: Composer, base: Sequence[str]) -> None:
    """Compose the jobs' config with every parameter set (at its low corner) before any trial runs.

    A misspelt key or a bad range fails here, naming it, instead of failing every trial.

    Raises:
        StudyError: the first problem.
    """
    overrides = trial_overrides(corner_values(cfg.params))
    try:
        job = to_config(composer.compose([*base, *overrides]))
        validate(job)
    except Exception as error:
        raise StudyError(
            f"{where}: the search space does not compose with every param at its low value or first "
            f"choice [{' '.join(overrides)}]: {error_message(error)}"
        ) from error
    check_objective(cfg, where, job)


def load_study(name: str) -> tuple[str, StudyConfig]:
    """Read and check a study file.

    Returns:
        ``(study name, config)``; the name is the file's stem.

    Raises:
        StudyError: a missing file, an unknown key, a wrong type or a bad value (naming the key).
    """
    path = study_path(name)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(StudyConfig), OmegaConf.load(path))
        cfg = OmegaConf.to_object(merged)
    except Exception as error:  # OmegaConf names the key
        raise StudyError(f"{path}: {error_message(error)} (keys and types: vice.tune.StudyConfig)") from error
    assert isinstance(cfg, StudyConfig)
    check_study(cfg, str(path))
    return path.stem, cfg


def study_id(name: str) -> str:
    """The study's Optuna name, MLflow experiment and output folder: ``tune_<name>``."""
    return f"{STUDY_PREFIX}{name}"


# The search space ---------------------------------------------------------------------------------


def choice_token(value: Any) -> Any:
    """A categorical choice as Optuna stores it: lists become their override text ``[0.5,2.0]``."""
    if isinstance(value, list | tuple):
        return "[" + ",".join(str(choice_token(v)) for v in value) + "]"
    return value


def override_value(value: Any) -> str:
    """A parameter value as Hydra override text (``true``, ``0.3``, ``[0.5,2.0]``, ``null``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(choice_token(value))


def suggest(trial: Any, params: Mapping[str, ParamConfig]) -> dict[str, Any]:
    """Draw the trial's value of every active parameter, in file order.

    Args:
        trial: an ``optuna.Trial``.
        params: the study's search space.

    Returns:
        Key -> value (Optuna's value; categorical lists as their override text), inactive keys left out.
    """
    values: dict[str, Any] = {}
    for key, p in params.items():
        active = all(
            other in values and values[other] in [choice_token(c) for c in allowed]
            for other, allowed in p.when.items()
        )
        if not active:
            continue
        if p.type == "categorical":
            values[key] = trial.suggest_categorical(key, [choice_token(c) for c in p.choices or []])
        elif p.type == "int":
            values[key] = trial.suggest_int(
                key, int(p.low or 0), int(p.high or 0), step=int(p.step or 1), log=p.log
            )
        else:
            values[key] = trial.suggest_float(
                key, float(p.low or 0), float(p.high or 0), step=p.step, log=p.log
            )
    return values


def trial_overrides(values: Mapping[str, Any]) -> list[str]:
    """The Hydra overrides of a trial's parameter values (``views.mask_ratio=0.31``)."""
    return [f"{key}={override_value(value)}" for key, value in values.items()]


def build_sampler(cfg: StudyConfig, num_existing: int = 0) -> Any:
    """The study's seeded sampler (TPE multivariate with constant liar, random, or grid).

    Args:
        cfg: the study.
        num_existing: trials already in the storage. A resumed study seeds with ``seed + num_existing``:
            re-seeding with ``seed`` alone would ask the startup trials' values again (``seed: null``
            stays unseeded).
    """
    import optuna

    seed = cfg.sampler.seed
    s = replace(cfg.sampler, seed=None if seed is None else seed + num_existing)
    if s.name == "grid":
        space = {key: [choice_token(c) for c in p.choices or []] for key, p in cfg.params.items()}
        return optuna.samplers.GridSampler(space, seed=s.seed)
    if s.name == "random":
        return optuna.samplers.RandomSampler(seed=s.seed)
    return optuna.samplers.TPESampler(
        seed=s.seed, n_startup_trials=s.n_startup_trials, multivariate=True, constant_liar=True
    )


def build_pruner(cfg: StudyConfig) -> Any:
    """The study's pruner: median over the trials' intermediate evaluations, or none."""
    import optuna

    if cfg.pruner.name == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=cfg.pruner.n_startup_trials, n_warmup_steps=cfg.pruner.n_warmup_steps
    )


def build_storage(storage: str | None, study_dir: Path) -> Any:
    """Optuna storage: a journal file (default ``<study dir>/optuna.journal``) or an RDB URL.

    Raises:
        StudyError: an SQLite URL (parallel writers lock or corrupt it, worst on a network FS), or an
            RDB URL whose driver is not installed (naming the extra to install) or whose server does not
            answer.
    """
    import optuna
    import sqlalchemy.exc
    from optuna.storages.journal import JournalFileBackend

    if storage is not None and storage.startswith("sqlite"):
        raise StudyError(
            f"--storage {redact_uri(storage)}: SQLite breaks with parallel writers (and on NFS); use a journal file "
            "path on the shared filesystem (the default) or postgresql://user@host/db"
        )
    scheme = storage.split(":", 1)[0].split("+", 1)[0] if storage is not None else ""
    if storage is not None and scheme in RDB_SCHEMES:
        try:
            return optuna.storages.RDBStorage(storage)
        except ImportError as error:
            raise StudyError(
                f"--storage {redact_uri(storage)}: no {scheme} driver ({error.__cause__ or error}): "
                f"{RDB_DRIVERS[scheme]}"
            ) from None
        except sqlalchemy.exc.OperationalError as error:
            reason = " ".join(str(error.orig).split())
            raise StudyError(
                f"--storage {redact_uri(storage)}: cannot connect: {redact_uri(reason)}"
            ) from None
    path = Path(storage) if storage else study_dir / JOURNAL_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(str(path.absolute())))


# Jobs ---------------------------------------------------------------------------------------------


class TrialTask:
    """What a trial's submitit job runs: :func:`vice.job.run_job`.

    On preemption or timeout submitit requeues it with the same config; the job resumes from its run
    dir's checkpoints and MLflow run.
    """

    def __call__(self, cfg: Config) -> dict[str, float]:
        """Train and evaluate ``cfg``; returns the final metrics (rank 0)."""
        from vice.job import run_job

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


# The driver ---------------------------------------------------------------------------------------


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
class Study:
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


def trial_config(s: Study, values: Mapping[str, Any]) -> tuple[Config, Path]:
    """Compose and validate a trial's config; give it its run dir and tracking.

    Raises:
        StudyError: the config does not compose or validate (naming the key).
    """
    base = [f"experiment={s.cfg.experiment}", *s.task_overrides, *trial_overrides(values)]
    try:
        cfg = to_config(s.composer.compose(base))
        validate(cfg)
    except Exception as error:
        raise StudyError(
            f"trial overrides [{' '.join(base[1:])}] do not compose: {error_message(error)}"
        ) from error
    key = compute_run_key(cfg)
    run_dir = job_dir(s.study_dir.parent, s.name, key)
    job = Job(0, tuple(base[1:]), cfg, key, run_dir)
    full = [*job_overrides(job, s.cfg.experiment, s.tracking_uri, s.parent_run_id, s.name)]
    full.append(f"tracking.experiment={s.name}")
    final = to_config(s.composer.compose(full))
    return final, run_dir


def _set_attrs(study: Any, trial_id: int, attrs: Mapping[str, Any]) -> None:
    for key, value in attrs.items():
        study._storage.set_trial_user_attr(trial_id, key, value)


def _tag_run(s: Study, run_id: str, number: int, params: Mapping[str, Any], state: str) -> None:
    """Tag a trial's MLflow run with the study, trial number, state and params, in one batch write."""
    from mlflow.entities import RunTag

    from vice.tracking import _client

    tags = {
        "optuna.study": s.name,
        "optuna.trial": str(number),
        "optuna.state": state,
        "mlflow.runName": f"trial {number}",
        **{f"optuna.param.{key}": override_value(value) for key, value in params.items()},
    }
    _client(s.tracking_uri).log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])


def _run_id(run_dir: Path) -> str | None:
    """The MLflow run id a job wrote into its run dir; None before the job created its run."""
    from vice.tracking import RUN_ID_FILE

    id_file = run_dir / RUN_ID_FILE
    return id_file.read_text().strip() if id_file.exists() else None


def _mlflow_tags(s: Study, flight: InFlight, state: str) -> None:
    """Tag a trial's MLflow run (once its job created it); see :func:`_tag_run`."""
    run_id = _run_id(flight.run_dir)
    if run_id is None:
        return
    _tag_run(s, run_id, flight.trial.number, flight.trial.params, state)
    flight.tagged = True


def sync_tags(s: Study) -> int:
    """Re-tag the runs whose ``optuna.state`` lags their trial's state; returns how many were fixed.

    A driver killed between telling Optuna and tagging MLflow leaves a finished trial's run tagged
    RUNNING. A run belongs to the last trial that submitted a job for it (a retried trial resumes the
    run of the failed one); runs whose last trial is still running are left to :func:`collect`.
    """
    from optuna.trial import TrialState

    from vice.tracking import _client

    last: dict[str, Any] = {}
    for trial in sorted(s.optuna_study.get_trials(deepcopy=False), key=lambda t: t.number):
        run_id = _run_id(Path(trial.user_attrs[ATTR_RUN_DIR])) if ATTR_JOB_ID in trial.user_attrs else None
        if run_id is not None:
            last[run_id] = trial
    client, fixed = _client(s.tracking_uri), 0
    for run_id, trial in last.items():
        if trial.state == TrialState.RUNNING:
            continue
        if client.get_run(run_id).data.tags.get("optuna.state") != trial.state.name:
            _tag_run(s, run_id, trial.number, trial.params, trial.state.name)
            fixed += 1
    return fixed


def submit_trial(s: Study) -> InFlight | None:
    """Ask a trial, compose its config and submit its job; None when it was answered without a job.

    A trial whose config is the one of a complete trial (same run key) gets that trial's value.
    """
    from optuna.trial import TrialState

    trial = s.optuna_study.ask()
    values = suggest(trial, s.cfg.params)
    try:
        cfg, run_dir = trial_config(s, values)
    except StudyError as error:
        _set_attrs(s.optuna_study, trial._trial_id, {ATTR_ERROR: str(error)})
        s.optuna_study.tell(trial, state=TrialState.FAIL)
        log.error("trial %d: %s", trial.number, error)
        return None
    done = [
        t
        for t in s.optuna_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.user_attrs.get(ATTR_RUN_KEY) == run_dir.name
    ]
    _set_attrs(s.optuna_study, trial._trial_id, {ATTR_RUN_DIR: str(run_dir), ATTR_RUN_KEY: run_dir.name})
    if done:
        log.info("trial %d has the config of trial %d: same value", trial.number, done[0].number)
        s.optuna_study.tell(trial, done[0].value)
        return None
    busy = [f for f in s.in_flight if f.run_dir == run_dir]
    if busy:
        _set_attrs(
            s.optuna_study,
            trial._trial_id,
            {ATTR_ERROR: f"same config as running trial {busy[0].trial.number}"},
        )
        s.optuna_study.tell(trial, state=TrialState.FAIL)
        return None
    job = s.executor.submit(TrialTask(), cfg)
    folder = str(s.study_dir / SUBMITIT_DIR / "%j")
    _set_attrs(
        s.optuna_study,
        trial._trial_id,
        {
            ATTR_JOB_ID: str(job.job_id),
            ATTR_FOLDER: folder,
            ATTR_CLUSTER: s.cluster,
            ATTR_FINAL_STEP: cfg.train.max_steps,
        },
    )
    log.info("trial %d: job %s [%s]", trial.number, job.job_id, " ".join(trial_overrides(values)))
    return InFlight(trial, job, run_dir, final_step=cfg.train.max_steps)


def _retry(s: Study, number: int, params: Mapping[str, Any]) -> None:
    s.optuna_study.enqueue_trial(dict(params), user_attrs={ATTR_RETRY_OF: number}, skip_if_exists=False)


def collect(s: Study, flight: InFlight) -> None:
    """Tell Optuna how a finished job ended.

    A value: COMPLETE. An exception in the job: FAIL with the traceback's end. No result (cancelled,
    killed, node failure): FAIL, and the same parameters are asked again (the job resumes).
    """
    from optuna.trial import TrialState
    from submitit.core.utils import FailedJobError, UncompletedJobError

    study, trial = s.optuna_study, flight.trial
    try:
        metrics = flight.job.result()
    except FailedJobError as error:
        _set_attrs(study, trial._trial_id, {ATTR_ERROR: tail(str(error), ERROR_LINES)})
        study.tell(trial, state=TrialState.FAIL)
        log.error("trial %d failed in its job:\n%s", trial.number, tail(str(error), ERROR_LINES))
        _mlflow_tags(s, flight, "FAIL")
        return
    except UncompletedJobError as error:
        _set_attrs(study, trial._trial_id, {ATTR_ERROR: tail(str(error), ERROR_LINES)})
        study.tell(trial, state=TrialState.FAIL)
        _retry(s, trial.number, trial.params)
        log.warning(
            "trial %d: job %s ended without a result; asking its params again",
            trial.number,
            flight.job.job_id,
        )
        _mlflow_tags(s, flight, "FAIL")
        return
    value = (metrics or {}).get(s.cfg.metric)
    if value is None or not math.isfinite(value):
        reason = f"the job's metrics have no finite {s.cfg.metric} (got {sorted(metrics or {})}): check eval.enabled and the metric name"
        _set_attrs(study, trial._trial_id, {ATTR_ERROR: reason})
        study.tell(trial, state=TrialState.FAIL)
        log.error("trial %d: %s", trial.number, reason)
        _mlflow_tags(s, flight, "FAIL")
        return
    study.tell(trial, float(value))
    log.info("trial %d: %s = %.4f", trial.number, s.cfg.metric, value)
    _mlflow_tags(s, flight, "COMPLETE")


def report_intermediate(s: Study, flight: InFlight, may_prune: bool = True) -> bool:
    """Report the job's new intermediate evaluations to its trial; cancel it when the pruner says so.

    The final evaluation (logged at ``train.max_steps`` under the same metric) is the trial's value,
    not an intermediate one: it is never reported, so a finished trial cannot be pruned. With
    ``may_prune`` False (a job already done) the values are only reported, for later trials' medians.

    Returns:
        True when the trial was pruned (its job cancelled, the trial told PRUNED).
    """
    from optuna.trial import TrialState

    from vice.tracking import _client

    run_id = _run_id(flight.run_dir)
    if run_id is None:
        return False
    if not flight.tagged:
        _mlflow_tags(s, flight, "RUNNING")
    history = _client(s.tracking_uri).get_metric_history(run_id, s.cfg.metric)
    final = flight.final_step if flight.final_step is not None else math.inf
    new = sorted((m.step, m.value) for m in history if flight.last_step < m.step < final)
    for step, value in new:
        flight.trial.report(value, step)
        flight.last_step = step
    if may_prune and new and flight.trial.should_prune():
        flight.job.cancel(check=False)
        s.optuna_study.tell(flight.trial, state=TrialState.PRUNED)
        log.info("trial %d pruned at step %d", flight.trial.number, flight.last_step)
        _mlflow_tags(s, flight, "PRUNED")
        return True
    return False


def reconcile(s: Study) -> list[InFlight]:
    """Match the RUNNING trials of an earlier driver with their jobs.

    A live SLURM job is adopted; a finished one is collected; a trial with no job, or a job that is
    gone, is marked FAIL and its parameters asked again (a local job dies with its driver's session).
    """
    import optuna
    from optuna.trial import TrialState

    study = s.optuna_study
    adopted: list[InFlight] = []
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = frozen.user_attrs
        trial = optuna.trial.Trial(study, frozen._trial_id)
        job_id = attrs.get(ATTR_JOB_ID)
        if job_id is None:
            study.tell(trial, state=TrialState.FAIL)
            _retry(s, frozen.number, frozen.params)
            continue
        job = attach_job(attrs[ATTR_CLUSTER], attrs[ATTR_FOLDER], job_id)
        flight = InFlight(
            trial,
            job,
            Path(attrs[ATTR_RUN_DIR]),
            max(frozen.intermediate_values, default=-1),
            final_step=attrs.get(ATTR_FINAL_STEP),
        )
        if attrs[ATTR_CLUSTER] == "slurm" and not job.done():
            log.info("trial %d: adopting running job %s", frozen.number, job_id)
            adopted.append(flight)
        elif attrs[ATTR_CLUSTER] == "local" and not job.paths.result_pickle.exists():
            study.tell(trial, state=TrialState.FAIL)
            _retry(s, frozen.number, frozen.params)
            log.warning(
                "trial %d: local job %s of an earlier driver left no result; asking again",
                frozen.number,
                job_id,
            )
        else:
            collect(s, flight)
    return adopted


def drive(s: Study) -> None:
    """Keep ``max_parallel`` trials in flight until ``n_trials`` are complete or pruned.

    Raises:
        StudyError: more than ``max_failures`` failed trials.
    """
    s.in_flight = reconcile(s)
    fixed = sync_tags(s)
    if fixed:
        log.info("re-tagged %d MLflow run(s) of trials finished by an earlier driver", fixed)
    while True:
        target = s.cfg.n_trials - finished_count(s.optuna_study)
        while len(s.in_flight) < min(s.cfg.max_parallel, target):
            failed = _counts(s.optuna_study)["FAIL"]
            if failed > s.cfg.max_failures:
                raise StudyError(
                    f"{failed} trials failed (max_failures={s.cfg.max_failures}): see the trials' `error` "
                    f"attributes (optuna.load_study(...).trials) and their run dirs under {s.study_dir}"
                )
            flight = submit_trial(s)
            target = s.cfg.n_trials - finished_count(s.optuna_study)
            if flight is not None:
                s.in_flight.append(flight)
        if not s.in_flight:
            return
        time.sleep(s.cfg.poll_s)
        still: list[InFlight] = []
        for flight in s.in_flight:
            if flight.job.done():  # first: a finished trial is collected, never pruned
                report_intermediate(s, flight, may_prune=False)
                collect(s, flight)
            elif not report_intermediate(s, flight):
                still.append(flight)
        s.in_flight = still


# Results ------------------------------------------------------------------------------------------


def _nested(overrides: Sequence[str], parser: Any) -> dict[str, Any]:
    """Value overrides as a nested dict (``views.mask_ratio=0.3`` -> ``{views: {mask_ratio: 0.3}}``)."""
    tree = OmegaConf.create()
    for override in parser.parse_overrides(list(overrides)):
        OmegaConf.update(tree, override.key_or_group, override.value(), merge=True)
    result = OmegaConf.to_container(tree)
    assert isinstance(result, dict)
    return {str(key): value for key, value in result.items()}


def best_experiment(s: Study) -> tuple[str, str]:
    """The best trial as an experiment file.

    The file includes the base experiment and holds the fixed overrides and the best values as deltas;
    the base experiment's own sweep axes are pinned to what the study used.

    Returns:
        ``(experiment name, YAML text)``; copy the file to ``sweeps/experiment/`` to run it with vice-sweep.
    """
    best = s.optuna_study.best_trial
    name = f"{s.name}_best" + (SMOKE_SUFFIX if is_smoke(s.cfg.experiment) else "")
    parser = s.composer.parser
    is_group = {
        o.input_line: s.composer.loader.repository.group_exists(o.key_or_group)
        for o in parser.parse_overrides(s.task_overrides)
    }
    values = [o for o in s.task_overrides if not is_group[o]] + trial_overrides(best.params)
    axes: dict[str, str] = {}
    for key in s.master.hydra.sweeper.params or {}:
        given = [o.split("=", 1)[1] for o in s.task_overrides if o.split("=", 1)[0] == key]
        if given:
            axes[key] = given[-1]
        elif key in s.master.hydra.runtime.choices:
            axes[key] = str(s.master.hydra.runtime.choices[key])
        else:
            axes[key] = override_value(OmegaConf.select(s.master, key))
    body = {
        "defaults": [f"/experiment/{s.cfg.experiment}", "_self_"],
        "experiment": name,
        **_nested(values, parser),
        "hydra": {"sweeper": {"params": axes}},
    }
    header = (
        f"# @package _global_\n# Best trial of study {s.name}: #{best.number}, {s.cfg.metric} = {best.value:.4f} "
        f"({finished_count(s.optuna_study)} trials). Copy to sweeps/experiment/ and run `vice-sweep {name}`.\n"
    )
    return name, header + yaml.safe_dump(body, sort_keys=False)


def save_results(s: Study) -> list[Path]:
    """Write the best experiment file, the trials table and the plots into the study dir.

    They are logged on the parent run, with the best value and parameters.

    Returns:
        The files written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm
    from optuna.exceptions import ExperimentalWarning
    from optuna.trial import TrialState

    from vice.tracking import MLflowLogger, _client

    written: list[Path] = []
    frame = s.optuna_study.trials_dataframe()
    (s.study_dir / TRIALS_CSV).write_text(frame.to_csv(index=False))
    written.append(s.study_dir / TRIALS_CSV)
    complete = s.optuna_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if complete:
        name, text = best_experiment(s)
        best_file = s.study_dir / f"{name}.yaml"
        best_file.write_text(text)
        written.append(best_file)
    plots: list[tuple[str, Callable[[Any], Any]]] = [(HISTORY_PNG, ovm.plot_optimization_history)]
    if len(complete) >= 2:
        plots.append((IMPORTANCES_PNG, ovm.plot_param_importances))
    for file_name, plot in plots:
        try:
            with warnings.catch_warnings():  # optuna marks its matplotlib plots experimental
                warnings.simplefilter("ignore", ExperimentalWarning)
                axes = plot(s.optuna_study)
        except (ValueError, RuntimeError) as error:  # e.g. no parameter varied yet
            log.warning("no %s: %s", file_name, error)
            continue
        axes.figure.savefig(s.study_dir / file_name, bbox_inches="tight")
        plt.close(axes.figure)
        written.append(s.study_dir / file_name)
    logger = MLflowLogger(_client(s.tracking_uri), s.parent_run_id)
    for path in written:
        logger.log_artifact(path)
    if complete:
        best = s.optuna_study.best_trial
        logger.log_metrics({f"best/{s.cfg.metric}": float(best.value)}, step=len(s.optuna_study.trials))
        logger.set_tags(
            {"best_trial": str(best.number), "best_params": " ".join(trial_overrides(best.params))}
        )
    return written


# The command --------------------------------------------------------------------------------------


@contextmanager
def driver_lock(study_dir: Path) -> Iterator[None]:
    """Hold the study's driver lock: two drivers of one study would submit each other's trials.

    Raises:
        StudyError: another driver holds it.
    """
    study_dir.mkdir(parents=True, exist_ok=True)
    handle: IO[str] = (study_dir / LOCK_FILE).open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise StudyError(f"{holder} drives this study ({study_dir / LOCK_FILE}); stop it first") from None
    handle.truncate(0)
    handle.write(f"vice-tune pid {os.getpid()} on {socket.gethostname()}\n")
    handle.flush()
    try:
        yield
    finally:
        handle.close()


def _parent_run(optuna_study: Any, tracking_uri: str, experiment_id: str, name: str, launcher: str) -> str:
    """The study's MLflow parent run: the one its storage names (set back to RUNNING), else a new one."""
    from mlflow.exceptions import MlflowException

    from vice.tracking import _client, start_parent_run

    known = optuna_study.user_attrs.get(ATTR_PARENT_RUN)
    client = _client(tracking_uri)
    if known is not None:
        try:
            client.update_run(known, status="RUNNING")
            return str(known)
        except MlflowException:
            log.warning("parent run %s is not in %s: starting a new one", known, tracking_uri)
    run_id = start_parent_run(
        tracking_uri, experiment_id, name, run_name=name, tags={"study": name, "launcher": launcher}
    )
    optuna_study.set_user_attr(ATTR_PARENT_RUN, run_id)
    return run_id


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vice-tune",
        description="Run (or resume) an Optuna study of sweeps/study/ with max_parallel trials always in flight.",
    )
    parser.add_argument(
        "study", help=f"a file of sweeps/study/ ({', '.join(list_studies())}) or a .yaml path"
    )
    parser.add_argument("overrides", nargs="*", help="fixed overrides for every trial; hydra.launcher.* too")
    parser.add_argument(
        "--output-dir", type=Path, default=Path(DEFAULT_OUTPUT_DIR), help="run dirs, journal, MLflow store"
    )
    parser.add_argument(
        "--storage",
        help=f"journal file path or an RDB URL (default ${STORAGE_ENV}, else the study's, else "
        "<output dir>/tune_<study>/optuna.journal)",
    )
    parser.add_argument("--launcher", help="launcher preset of sweeps/hydra/launcher/ (default: the study's)")
    parser.add_argument(
        "--n-trials", type=int, help="the total of complete + pruned trials (default: the study's)"
    )
    parser.add_argument("--max-parallel", type=int, help="trials in flight (default: the study's)")
    parser.add_argument("--poll-s", type=float, help="seconds between job polls (default: the study's)")
    return parser


def prepare(args: argparse.Namespace, stack: ExitStack) -> Study:
    """Load the study, check a first trial's inputs, take the driver lock, open storage, tracking, executor.

    Call it inside ``hydra.initialize_config_dir(SWEEPS_DIR)``: trials are composed while the study runs.
    The driver lock is held by ``stack`` (until it closes), so a second driver stops before it touches
    the storage or the MLflow parent run.

    Raises:
        StudyError: bad study, launcher, override, storage or inputs.
    """
    import optuna
    from hydra import compose

    from vice.config import register_schema
    from vice.tracking import credentials_to_environment, prepare_tracking, resolve_tracking_uri

    name, cfg = load_study(args.study)
    if os.environ.get(STORAGE_ENV):
        cfg.storage = os.environ[STORAGE_ENV]
    for key in ("n_trials", "max_parallel", "poll_s", "launcher", "storage"):
        if getattr(args, key) is not None:
            setattr(cfg, key, getattr(args, key))
    check_study(cfg, name)
    sid = study_id(name)
    output_dir = args.output_dir.absolute()
    study_dir = output_dir / sid
    hydra_overrides, task_overrides = split_overrides([*cfg.overrides, *args.overrides])
    try:
        experiment = experiment_name(cfg.experiment, smoke=False)
        launcher, _ = choose_launcher(cfg.launcher, experiment)
    except SweepError as error:
        raise StudyError(str(error)) from error
    register_schema()
    try:
        master = compose(
            "config",
            overrides=[f"hydra/launcher={launcher}", *hydra_overrides, f"experiment={experiment}"],
            return_hydra_config=True,
        )
    except Exception as error:
        raise StudyError(
            f"the experiment or a hydra override does not compose: {error_message(error)}"
        ) from error
    composer = Composer()
    probe = to_config(composer.compose([f"experiment={experiment}", *task_overrides]))
    problems = check_inputs([Job(0, (), probe, "", Path())])
    if problems:
        raise StudyError("missing inputs:\n" + "\n".join(f"  - {p}" for p in problems))
    check_search_space(cfg, name, composer, [f"experiment={experiment}", *task_overrides])
    try:
        tracking_uri = credentials_to_environment(
            resolve_tracking_uri(probe.tracking.tracking_uri, output_dir)
        )
    except ValueError as error:
        raise StudyError(str(error)) from error
    if drop_tracking_uri(task_overrides) != task_overrides:  # its credentials are in the environment now
        task_overrides = [*drop_tracking_uri(task_overrides), f"{TRACKING_URI_KEY}={_quoted(tracking_uri)}"]
    stack.enter_context(driver_lock(study_dir))
    optuna_study = optuna.create_study(
        study_name=sid,
        storage=build_storage(cfg.storage, study_dir),
        sampler=build_sampler(cfg),
        pruner=build_pruner(cfg),
        direction=cfg.direction,  # type: ignore[arg-type]  # checked against DIRECTIONS
        load_if_exists=True,
    )
    optuna_study.sampler = build_sampler(cfg, len(optuna_study.get_trials(deepcopy=False)))
    experiment_id = prepare_tracking(tracking_uri, sid)
    parent = _parent_run(optuna_study, tracking_uri, experiment_id, sid, launcher)
    launcher_cfg = OmegaConf.to_container(master.hydra.launcher, resolve=True)
    assert isinstance(launcher_cfg, dict)
    cluster, executor = make_executor(
        {str(k): v for k, v in launcher_cfg.items()}, study_dir / SUBMITIT_DIR, sid
    )
    return Study(
        sid,
        cfg,
        optuna_study,
        study_dir,
        composer,
        master,
        task_overrides,
        tracking_uri,
        parent,
        cluster,
        executor,
    )


def run_study(s: Study) -> list[Path]:
    """Drive the study to its total (hold the driver lock, see :func:`prepare`), then save its results.

    On an interrupt the SLURM jobs keep running (a re-run adopts them); local jobs are cancelled (a
    re-run asks their parameters again, and they resume from their checkpoints).

    Returns:
        The files written into the study dir.
    """
    from vice.tracking import end_run

    print(
        f"study {s.name}: {finished_count(s.optuna_study)}/{s.cfg.n_trials} trials done; up to "
        f"{s.cfg.max_parallel} in flight on {s.cluster}; files in {s.study_dir}; MLflow {s.tracking_uri}"
    )
    try:
        drive(s)
    except BaseException:
        if s.cluster == "local":
            for flight in s.in_flight:
                flight.job.cancel(check=False)
        end_run(s.tracking_uri, s.parent_run_id, "KILLED")
        raise
    written = save_results(s)
    end_run(s.tracking_uri, s.parent_run_id, "FINISHED")
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """``vice-tune``: run or resume a study to its total (see the module docstring)."""
    from hydra import initialize_config_dir

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("optuna").setLevel(logging.WARNING)
    redact_logs()
    args = _parser().parse_intermixed_args(argv)
    try:
        with (
            initialize_config_dir(config_dir=str(SWEEPS_DIR), version_base="1.3", job_name="vice-tune"),
            ExitStack() as stack,
        ):
            s = prepare(args, stack)
            written = run_study(s)
    except StudyError as error:
        print(f"vice-tune: {redact_uri(str(error))}", file=sys.stderr)
        return 2
    best = s.optuna_study.best_trial
    print(
        f"best: trial {best.number}, {s.cfg.metric} = {best.value:.4f} [{' '.join(trial_overrides(best.params))}]"
    )
    print("\n".join(f"wrote {p}" for p in written))
    print(f"browse:  mlflow ui --backend-store-uri {s.tracking_uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
