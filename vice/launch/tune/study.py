"""A study file of ``sweeps/study/``: its schema, its checks, and the Optuna sampler, pruner and storage."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from omegaconf import MISSING, OmegaConf

from vice.config import Config, to_config, validate
from vice.launch.app import SWEEPS_DIR
from vice.launch.sweep.compose import Composer, error_message
from vice.launch.tune.space import PARAM_TYPES, ParamConfig, choice_token, corner_values, trial_overrides
from vice.redact import redact_uri

STUDIES_DIR = SWEEPS_DIR / "study"

#: Prefix of a study's id: its Optuna study name, MLflow experiment and output folder.
STUDY_PREFIX = "tune_"

JOURNAL_FILE = "optuna.journal"

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


class StudyError(ValueError):
    """Bad study input, found before anything was submitted; the message says how to fix it."""


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
        raise StudyError(
            f"{path}: {error_message(error)} (keys and types: vice.launch.tune.study.StudyConfig)"
        ) from error
    assert isinstance(cfg, StudyConfig)
    check_study(cfg, str(path))
    return path.stem, cfg


def study_id(name: str) -> str:
    """The study's Optuna name, MLflow experiment and output folder: ``tune_<name>``."""
    return f"{STUDY_PREFIX}{name}"


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
    sampler = replace(cfg.sampler, seed=None if seed is None else seed + num_existing)
    if sampler.name == "grid":
        space = {key: [choice_token(c) for c in p.choices or []] for key, p in cfg.params.items()}
        return optuna.samplers.GridSampler(space, seed=sampler.seed)
    if sampler.name == "random":
        return optuna.samplers.RandomSampler(seed=sampler.seed)
    return optuna.samplers.TPESampler(
        seed=sampler.seed, n_startup_trials=sampler.n_startup_trials, multivariate=True, constant_liar=True
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
