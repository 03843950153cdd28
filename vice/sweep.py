"""``vice-sweep``: run one paper experiment as a Hydra multirun, tracked in MLflow, never duplicated.

Usage::

    vice-sweep EXPERIMENT [--smoke] [--launcher auto|local|slurm|v100|v100_node|v100_8nodes]
               [--plan] [--output-dir DIR] [--sweep-id ID] [--resubmit-running] [overrides ...]

``EXPERIMENT`` names a file in ``sweeps/experiment/`` (``table3_decomposition``); ``--smoke`` picks its
``_smoke`` variant on the synthetic scenes. Overrides are Hydra's: ``seed=0,1`` replaces a sweep axis,
``train.max_steps=100`` changes every job, ``hydra.launcher.partition=gpu`` changes the launcher.

What happens, in order (nothing is submitted until every check has passed):

1. every job of the experiment's sweep (``hydra.sweeper.params`` x overrides) is composed onto the
   typed schema and validated; its dataset roots and weights must exist, and its datasets must be
   the experiment's own;
2. each job gets its run key (:func:`vice.job.compute_run_key`) and its deterministic run dir;
   MLflow says which are done, running, failed or still to do, and SLURM (``squeue``, ``sacct``) which of
   the runs MLflow shows RUNNING are really dead (killed without cleanup: SIGKILL, out of memory, a
   node failure): that is the plan (``--plan`` stops here);
3. the submitting process creates the MLflow store, the experiment and the sweep's parent run;
4. the jobs still to do (and the failed and dead ones, which resume from their checkpoints into their
   own runs) go to hydra-submitit-launcher, one launch per resource class (time limit), under one sweep id;
   ``launch`` blocks until they end, so keep this process alive (tmux on a login node);
5. every failed job is listed with its error's last lines and its log, and the command to browse
   the runs is printed.
"""

from __future__ import annotations

import argparse
import copy
import logging
import math
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from vice.app import EXPERIMENTS_DIR, SWEEPS_DIR, list_experiments
from vice.config import Config, to_config, validate
from vice.job import (
    DEFAULT_OUTPUT_DIR,
    ERROR_FILE,
    SMOKE_SUFFIX,
    compute_run_key,
    display_overrides,
    is_smoke,
    job_dir,
    tail,
)
from vice.redact import redact_logs, redact_uri

log = logging.getLogger(__name__)

LAUNCHERS_DIR = SWEEPS_DIR / "hydra" / "launcher"
AUTO = "auto"
#: What ``--launcher auto`` picks: the paper's 8 x 4 V100 for a paper experiment; for a smoke one the
#: SLURM cluster when ``sinfo`` answers, else local subprocesses.
PAPER_LAUNCHER = "v100_8nodes"
SLURM_LAUNCHER, LOCAL_LAUNCHER = "slurm", "local"
SINFO_TIMEOUT_S = 3
USABLE_NODE_STATES = ("idle", "mix", "alloc")
SWEEPS_SUBDIR = "sweeps"

#: Plan states, and the MLflow statuses they come from; "dead" is a RUNNING run whose SLURM job ended.
DONE, RUNNING, DEAD, FAILED, TODO = "done", "running", "dead", "failed", "to do"
STATES = (DONE, RUNNING, DEAD, FAILED, TODO)
MLFLOW_STATES = {
    "FINISHED": DONE,
    "RUNNING": RUNNING,
    "SCHEDULED": RUNNING,
    "FAILED": FAILED,
    "KILLED": FAILED,
}

#: Cost model for the GPU-hour estimate and the time limits (rough): paper Table 7 gives 4.824 s per
#: high-resolution step on V100s (512 px views, 5 views and 4 images per GPU, ResNet-50 + DeepLabV3+);
#: a step scales with pixels per view, views, images per GPU and the backbone's depth.
REFERENCE_STEP_S = 4.824
REFERENCE_VIEW_SIZE, REFERENCE_NUM_VIEWS, REFERENCE_BATCH_SIZE = 512, 5, 4
BACKBONE_COST = {"resnet18": 0.45, "resnet34": 0.7, "resnet50": 1.0, "resnet101": 1.6}
#: A job's time limit: estimated training time x margin + an allowance for the evaluation, whole hours.
TIME_LIMIT_MARGIN = 1.5
EVAL_ALLOWANCE_H = 0.5
MIN_TIME_LIMIT_MIN = 60

#: The override the sweep replaces by the resolved URI, without its credentials.
TRACKING_URI_KEY = "tracking.tracking_uri"
#: Config keys holding paths; vice-sweep passes them to jobs as absolute paths.
PATH_KEYS = ("data.root", "eval.root", "model.pretrained", "regions.cache_dir")
#: Error lines shown per failed job in the summary; log lines holding this are progress bars.
SUMMARY_LINES = 8
PROGRESS_BAR = "%|"
MAX_LISTED_PROBLEMS = 20
#: Seconds between checks while waiting for SLURM jobs the launcher gave up on.
WAIT_POLL_S = 5
#: SLURM job states after which a job never runs again (sacct and squeue spell them alike). Every
#: other state (PENDING, RUNNING, REQUEUED, SUSPENDED, a held requeue, ...) counts as alive, so that
#: an unfamiliar state never gets a live job submitted twice.
SLURM_ENDED_STATES = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "REVOKED",
        "TIMEOUT",
    }
)
#: What the plan says of a SLURM job that neither squeue nor sacct knows.
SLURM_UNKNOWN_JOB = "unknown to SLURM"
SLURM_QUERY_TIMEOUT_S = 60


class SweepError(ValueError):
    """Bad input, found before anything was submitted; the message says how to fix it."""


@dataclass(frozen=True)
class Job:
    """One job of a sweep.

    Attributes:
        index: position in the sweep (Hydra's job number).
        overrides: the job's task overrides (the experiment's sweep axes and the user's overrides).
        config: the composed, validated config.
        run_key: :func:`vice.job.compute_run_key` of ``config``.
        run_dir: the job's deterministic dir.
    """

    index: int
    overrides: tuple[str, ...]
    config: Config
    run_key: str
    run_dir: Path


@dataclass(frozen=True)
class RunState:
    """What MLflow knows of a run key: the status of its best run, its id and its tags.

    Attributes:
        status: the MLflow run status (RUNNING, FINISHED, FAILED, KILLED, SCHEDULED).
        run_id: the MLflow run id.
        tags: the run's tags (``slurm_job_id``, ``slurm_array_id``, log paths, ...).
        slurm_state: for a RUNNING run of a SLURM job, what SLURM says of that job (``RUNNING``,
            ``CANCELLED``, :data:`SLURM_UNKNOWN_JOB`); None when SLURM was not asked or did not answer.
    """

    status: str
    run_id: str
    tags: Mapping[str, str] = field(default_factory=dict)
    slurm_state: str | None = None


# Experiments and launchers ------------------------------------------------------------------------


def list_launchers() -> list[str]:
    """Every launcher preset in ``sweeps/hydra/launcher/``."""
    return sorted(p.stem for p in LAUNCHERS_DIR.glob("*.yaml"))


def experiment_name(name: str, smoke: bool) -> str:
    """The experiment file to run: ``name``, or its smoke variant with ``smoke``.

    Raises:
        SweepError: no such file (the message lists the experiments).
    """
    chosen = f"{name}{SMOKE_SUFFIX}" if smoke and not is_smoke(name) else name
    if chosen not in list_experiments():
        paper = [e for e in list_experiments() if not is_smoke(e)]
        raise SweepError(
            f"no experiment {chosen!r} in {EXPERIMENTS_DIR}: one of {', '.join(paper)} (add --smoke for "
            "its synthetic smoke variant)"
        )
    return chosen


def slurm_available() -> bool:
    """True when ``sinfo`` answers within :data:`SINFO_TIMEOUT_S` with a usable node."""
    if shutil.which("sinfo") is None:
        return False
    try:
        probe = subprocess.run(
            ["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=SINFO_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        return False
    return probe.returncode == 0 and any(s.rstrip("*~#") in USABLE_NODE_STATES for s in probe.stdout.split())


def choose_launcher(requested: str, experiment: str) -> tuple[str, str]:
    """The launcher preset to use, and why.

    Raises:
        SweepError: an unknown preset.
    """
    if requested != AUTO:
        if requested not in list_launchers():
            raise SweepError(f"--launcher {requested} is not a preset: one of {', '.join(list_launchers())}")
        return requested, "--launcher"
    if not is_smoke(experiment):
        return PAPER_LAUNCHER, "the paper's 8 nodes x 4 V100 (pick another with --launcher)"
    if slurm_available():
        return SLURM_LAUNCHER, "a SLURM cluster answers (sinfo)"
    return LOCAL_LAUNCHER, "no SLURM cluster answers: local subprocesses"


def split_overrides(overrides: Iterable[str]) -> tuple[list[str], list[str]]:
    """Split command-line overrides into Hydra's (``hydra.*``, ``hydra/...``) and the task's."""
    hydra_overrides: list[str] = []
    task_overrides: list[str] = []
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        (
            hydra_overrides if key == "hydra" or key.startswith(("hydra.", "hydra/")) else task_overrides
        ).append(override)
    return hydra_overrides, task_overrides


# Composing and checking the jobs ------------------------------------------------------------------


class Composer:
    """Compose job configs like Hydra does, composing each distinct set of group choices only once.

    Hydra composes the defaults list (the group choices) and then applies the value overrides; this
    caches the first step, and applies the value overrides with Hydra's own function. Use it inside
    ``hydra.initialize_config_dir``.
    """

    def __init__(self) -> None:
        from hydra._internal.config_loader_impl import ConfigLoaderImpl
        from hydra.core.global_hydra import GlobalHydra
        from hydra.core.override_parser.overrides_parser import OverridesParser

        loader = GlobalHydra.instance().config_loader()
        assert isinstance(loader, ConfigLoaderImpl)
        self.loader = loader
        self.parser = OverridesParser.create(config_loader=loader)
        self._composed: dict[tuple[str, ...], DictConfig] = {}

    def expand(self, params: Mapping[str, Any], overrides: Sequence[str]) -> list[list[str]]:
        """Every job of a sweep, as Hydra's basic sweeper expands it.

        Args:
            params: ``hydra.sweeper.params`` of the experiment (key -> ``"a,b,c"``).
            overrides: the user's task overrides; a key given here replaces the experiment's axis.

        Returns:
            One override list per job (the cartesian product of the axes, in Hydra's order).
        """
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

        lines = [f"{key}={value}" for key, value in params.items()] + list(overrides)
        return BasicSweeper.split_arguments(self.parser.parse_overrides(lines), None)[0]

    def compose(self, overrides: Sequence[str]) -> DictConfig:
        """The task config of ``sweeps/config.yaml`` with ``overrides`` (no sweep syntax)."""
        from hydra import compose
        from hydra._internal.config_loader_impl import ConfigLoaderImpl

        parsed = self.parser.parse_overrides(list(overrides))
        is_group = [self.loader.repository.group_exists(o.key_or_group) for o in parsed]
        groups = tuple(str(o.input_line) for o, g in zip(parsed, is_group, strict=True) if g)
        if groups not in self._composed:
            self._composed[groups] = compose("config", overrides=list(groups))
        cfg = copy.deepcopy(self._composed[groups])
        ConfigLoaderImpl._apply_overrides_to_config(
            [o for o, g in zip(parsed, is_group, strict=True) if not g], cfg
        )
        return cfg


def error_message(error: BaseException) -> str:
    """One line from a Hydra/OmegaConf/validation error: what failed and, from its cause, why."""
    lines = []
    for line in str(error).splitlines():
        if line.startswith("Config search path"):
            break
        if line.strip() and not line.startswith("To append"):
            lines.append(line.strip().rstrip("."))
    if error.__cause__ is not None:
        lines.append(str(error.__cause__).splitlines()[0])
    return "; ".join(lines)


def compose_jobs(
    composer: Composer, experiment: str, params: Mapping[str, Any], overrides: Sequence[str], output_dir: Path
) -> list[Job]:
    """Compose and validate every job of an experiment's sweep; give each its run key and run dir.

    Raises:
        SweepError: listing every job that does not compose or validate, or jobs that share a run key.
    """
    jobs: list[Job] = []
    problems: dict[str, list[Sequence[str]]] = {}
    for index, job_overrides in enumerate(composer.expand(params, overrides)):
        full = [f"experiment={experiment}", *job_overrides]
        try:
            cfg = to_config(composer.compose(full))
            validate(cfg)
        except Exception as error:  # Hydra, OmegaConf and ConfigError all name the key
            problems.setdefault(error_message(error), []).append(job_overrides)
            continue
        key = compute_run_key(cfg)
        jobs.append(Job(index, tuple(job_overrides), cfg, key, job_dir(output_dir, experiment, key)))
    if problems:
        listed = [
            f"{message} (in {len(where)} job(s), e.g. [{' '.join(display_overrides(where[0]))}])"
            for message, where in problems.items()
        ]
        raise SweepError(_listing("invalid config (keys and types: vice/config.py)", listed))
    seen: dict[str, Job] = {}
    for job in jobs:
        if job.run_key in seen:
            first = seen[job.run_key]
            raise SweepError(
                f"jobs [{' '.join(display_overrides(first.overrides))}] and "
                f"[{' '.join(display_overrides(job.overrides))}] have the same config (run key {job.run_key}): "
                "drop the duplicate axis value"
            )
        seen[job.run_key] = job
    return jobs


def _listing(title: str, problems: Sequence[str]) -> str:
    shown = [f"  - {p}" for p in dict.fromkeys(problems)][:MAX_LISTED_PROBLEMS]
    more = len(set(problems)) - len(shown)
    return "\n".join([f"{title}:", *shown, *([f"  ... and {more} more"] if more > 0 else [])])


def _eval_dataset(cfg: Config) -> tuple[str, str | None]:
    return cfg.eval.dataset or cfg.data.name, cfg.eval.root or cfg.data.root


def experiment_datasets(jobs: Iterable[Job]) -> tuple[set[str], set[str]]:
    """The training and the evaluation datasets an experiment's jobs use."""
    jobs = list(jobs)
    return {j.config.data.name for j in jobs}, {
        _eval_dataset(j.config)[0] for j in jobs if j.config.eval.enabled
    }


def check_datasets_match(
    jobs: Iterable[Job], experiment: str, train_sets: set[str], eval_sets: set[str]
) -> None:
    """Refuse jobs whose datasets are not the experiment's own (an override pointing elsewhere).

    Raises:
        SweepError: naming the key and the datasets the experiment uses.
    """
    problems = []
    for job in jobs:
        name = job.config.data.name
        if name not in train_sets:
            problems.append(
                f"data.name={name} does not match experiment {experiment}, which trains on "
                f"{', '.join(sorted(train_sets))}: drop the override"
                + ("" if is_smoke(experiment) else f" (or run {experiment}{SMOKE_SUFFIX})")
            )
        evaluated = _eval_dataset(job.config)[0]
        if job.config.eval.enabled and evaluated not in eval_sets:
            problems.append(
                f"evaluation dataset {evaluated} does not match experiment {experiment}, which evaluates on "
                f"{', '.join(sorted(eval_sets))}: drop the eval.dataset/data.name override"
            )
    if problems:
        raise SweepError(_listing("dataset does not match the experiment", problems))


def _dataset_problem(
    key: str, name: str, root: str | None, splits: Sequence[str], split_set: str
) -> str | None:
    """Why a dataset cannot be loaded (None when it can), naming the key to fix."""
    from vice.data.labelled import build_labelled_dataset

    if name == "synthetic":
        return None
    how = f"set VICE_DATA_DIR to the folder holding {name}/, or pass {key}=/path/to/{name}"
    if root is None:
        return f"{key} is not set for dataset {name}: {how}"
    if not Path(root).is_dir():
        return f"{key}={root} (dataset {name}) does not exist: {how}"
    if name == "folder":
        return None
    try:
        for split in splits:
            build_labelled_dataset(name, root, split, split_set)
    except (OSError, ValueError) as error:  # DataError is a ValueError
        return f"{key}={root} does not hold dataset {name}: {error}"
    return None


def check_inputs(jobs: Iterable[Job]) -> list[str]:
    """Every dataset root and weights file the jobs need, checked once each.

    Returns:
        One message per problem (empty when everything is in place).
    """
    checked: dict[tuple[Any, ...], str | None] = {}
    problems = []
    for job in jobs:
        cfg = job.config
        needs: list[tuple[str, str, str | None, tuple[str, ...], str]] = [
            ("data.root", cfg.data.name, cfg.data.root, (cfg.data.split,), cfg.data.split_set)
        ]
        if cfg.eval.enabled:
            name, root = _eval_dataset(cfg)
            key = "eval.root" if cfg.eval.root else "data.root"
            needs.append((key, name, root, ("train", "val"), cfg.data.split_set))
        for need in needs:
            if need not in checked:
                checked[need] = _dataset_problem(*need)
        problems += [checked[n] for n in needs if checked[n] is not None]
        weights = cfg.model.pretrained
        if weights is not None and not Path(weights).is_file():
            problems.append(
                f"model.pretrained={weights} does not exist: save torchvision's ImageNet {cfg.model.backbone} "
                "state dict there (VICE_WEIGHTS_DIR holds <backbone>.pth), or pass model.pretrained=null "
                "for random init"
            )
    return list(dict.fromkeys(p for p in problems if p is not None))


def _quoted(value: str) -> str:
    if "'" in value or "\\" in value:
        raise SweepError(
            f"path {value!r} holds a quote or a backslash, which Hydra overrides cannot carry: rename it"
        )
    return f"'{value}'"


def path_overrides(cfg: Config) -> list[str]:
    """Overrides that hand a job every path of its config as an absolute path."""
    found = []
    for key in PATH_KEYS:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value is not None:
            found.append(f"{key}={_quoted(os.path.abspath(value))}")
    return found


# Cost and resources -------------------------------------------------------------------------------


def step_seconds(cfg: Config) -> float:
    """Rough seconds per training step on one V100 (see :data:`REFERENCE_STEP_S`)."""
    scale = (cfg.views.view_size / REFERENCE_VIEW_SIZE) ** 2
    scale *= cfg.views.num_views / REFERENCE_NUM_VIEWS
    scale *= cfg.data.batch_size / REFERENCE_BATCH_SIZE
    return REFERENCE_STEP_S * scale * BACKBONE_COST[cfg.model.backbone]


def training_hours(cfg: Config) -> float:
    """Rough wall-clock hours of a job's training (DDP keeps the per-GPU batch, so the step time)."""
    return cfg.train.max_steps * step_seconds(cfg) / 3600


def time_limit_min(cfg: Config, cap_min: int) -> int:
    """A job's time limit: training estimate x margin + evaluation allowance, whole hours, at most ``cap_min``."""
    hours = math.ceil(training_hours(cfg) * TIME_LIMIT_MARGIN + EVAL_ALLOWANCE_H)
    return min(cap_min, max(MIN_TIME_LIMIT_MIN, 60 * hours))


def launcher_gpus(launcher: Mapping[str, Any]) -> int:
    """GPUs one job of a launcher preset holds (nodes x GPUs per node)."""
    return int(launcher.get("nodes") or 1) * int(launcher.get("gpus_per_node") or 0)


# MLflow -------------------------------------------------------------------------------------------


def _client(tracking_uri: str) -> Any:
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def _store_exists(tracking_uri: str) -> bool:
    return not tracking_uri.startswith("sqlite:///") or Path(tracking_uri.removeprefix("sqlite:///")).exists()


def _all_runs(client: Any, experiment_id: str) -> list[Any]:
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def fetch_states(tracking_uri: str, experiment: str) -> tuple[dict[str, RunState], list[Any]]:
    """What MLflow knows of every run key of an experiment (nothing is created when the store is absent).

    Returns:
        ``({run_key: state}, parent runs)``; a FINISHED run wins over others of the same key, then the
        newest.
    """
    if not _store_exists(tracking_uri):
        return {}, []
    client = _client(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return {}, []
    runs = sorted(_all_runs(client, found.experiment_id), key=lambda r: r.info.start_time or 0)
    states: dict[str, RunState] = {}
    parents = []
    for run in runs:
        key = run.data.tags.get("run_key")
        if key is None:
            parents.append(run)
            continue
        if states.get(key, RunState("", "")).status != "FINISHED":
            states[key] = RunState(run.info.status, run.info.run_id, dict(run.data.tags))
    return states, parents


def plan_state(state: RunState | None) -> str:
    """The plan state of a job: done, running, dead (a RUNNING run whose SLURM job ended), failed or to do."""
    if state is None:
        return TODO
    planned = MLFLOW_STATES.get(state.status, FAILED)
    if planned == RUNNING and state.slurm_state is not None and not slurm_job_alive(state.slurm_state):
        return DEAD
    return planned


def plan_label(state: RunState | None) -> str:
    """A job's plan state as the plan shows it, with SLURM's word on a running one.

    E.g. ``dead (SLURM 12_3: CANCELLED)``, ``running (SLURM 12_3: PENDING)``, ``running`` (no SLURM job).
    """
    planned = plan_state(state)
    if state is None or state.slurm_state is None:
        return planned
    return f"{planned} (SLURM {slurm_job_id(state.tags)}: {state.slurm_state})"


# SLURM: is a RUNNING run's job alive? ---------------------------------------------------------------


def slurm_job_id(tags: Mapping[str, str]) -> str | None:
    """The SLURM job of a run, as squeue and sacct name it: ``<array>_<task>`` for an array task.

    An array task's ``SLURM_JOB_ID`` (the ``slurm_job_id`` tag) can equal the array's own id, which
    sacct expands to every task, so the array id wins.
    """
    return tags.get("slurm_array_id") or tags.get("slurm_job_id")


def parse_job_states(output: str) -> dict[str, str]:
    """Job id -> state from ``sacct -n -X -P -o JobID,State`` or ``squeue -h -o %i|%T`` output.

    ``CANCELLED by 1000`` becomes ``CANCELLED``; when an id is listed twice (sacct after the controller's
    job ids restarted), the last line, the newest job, wins.
    """
    states = {}
    for line in output.splitlines():
        job_id, sep, state = line.partition("|")
        if sep and job_id.strip() and state.split():
            states[job_id.strip()] = state.split()[0]
    return states


def slurm_job_alive(state: str) -> bool:
    """True unless ``state`` says the job ended for good (:data:`SLURM_ENDED_STATES`, or unknown to SLURM)."""
    return state != SLURM_UNKNOWN_JOB and state not in SLURM_ENDED_STATES


class SlurmQueryError(RuntimeError):
    """Neither squeue nor sacct answered."""


def _slurm_command(command: list[str]) -> tuple[dict[str, str], str | None]:
    """Run a SLURM query; its parsed states, or the reason it gave none."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=SLURM_QUERY_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as error:
        return {}, f"{command[0]}: {error}"
    if done.returncode != 0:
        reason = done.stderr.strip() or f"exit status {done.returncode}"
        return {}, reason if reason.startswith(command[0]) else f"{command[0]}: {reason}"
    return parse_job_states(done.stdout), None


def query_slurm_states(job_ids: Sequence[str]) -> dict[str, str]:
    """What SLURM says of each job: the controller's state (squeue), else the accounting's (sacct).

    The controller knows every queued and running job (and those that ended in the last
    ``MinJobAge``); accounting knows every job, but may lag behind it.

    Returns:
        Job id -> state for the jobs SLURM knows.

    Raises:
        SlurmQueryError: neither command answered.
    """
    ids = ",".join(job_ids)
    queued, queue_error = _slurm_command(["squeue", "-h", "--states=all", "-o", "%i|%T", "-j", ids])
    if queue_error is not None and "Invalid job id" in queue_error:  # none of them is in the controller
        queue_error = None
    accounted, acct_error = _slurm_command(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ids])
    if queue_error is not None and acct_error is not None:
        raise SlurmQueryError(f"{queue_error}; {acct_error}")
    return {**accounted, **queued}


def check_slurm(
    states: Mapping[str, RunState], query: Callable[[Sequence[str]], dict[str, str]] = query_slurm_states
) -> dict[str, RunState]:
    """Ask SLURM about every run MLflow shows RUNNING that ran as a SLURM job.

    A job killed without cleanup (SIGKILL, out of memory, node failure) leaves its run RUNNING for good;
    SLURM knows it ended. Runs without SLURM tags (local launcher) stay as they are.

    Args:
        states: :func:`fetch_states`'s run key -> state.
        query: job ids -> SLURM states (:func:`query_slurm_states`).

    Returns:
        ``states`` with ``slurm_state`` set on those runs (:data:`SLURM_UNKNOWN_JOB` for a job SLURM does
        not know); unchanged, with a warning, when SLURM does not answer.
    """
    asked = {
        key: job_id
        for key, state in states.items()
        if state.status == "RUNNING" and (job_id := slurm_job_id(state.tags)) is not None
    }
    if not asked:
        return dict(states)
    try:
        found = query(sorted(set(asked.values())))
    except SlurmQueryError as error:
        log.warning("could not ask SLURM whether %d running job(s) are alive: %s", len(asked), error)
        return dict(states)
    checked = dict(states)
    for key, job_id in asked.items():
        checked[key] = replace(states[key], slurm_state=found.get(job_id, SLURM_UNKNOWN_JOB))
    return checked


def jobs_to_submit(
    jobs: Sequence[Job], states: Mapping[str, RunState], resubmit_running: bool
) -> tuple[list[Job], list[Job]]:
    """The jobs to submit (to do, failed, dead) and the running ones left alone.

    Args:
        jobs: the sweep's jobs.
        states: run key -> state, after :func:`check_slurm`.
        resubmit_running: also submit running jobs SLURM could not vouch for (no SLURM job: local
            launcher, or SLURM did not answer); a job SLURM says is alive is never submitted again.

    Returns:
        ``(to submit, left alone)``.
    """
    submit: list[Job] = []
    left: list[Job] = []
    for job in jobs:
        state = states.get(job.run_key)
        planned = plan_state(state)
        if planned in (TODO, FAILED, DEAD):
            submit.append(job)
        elif planned == RUNNING:
            vouched = state is not None and state.slurm_state is not None
            (submit if resubmit_running and not vouched else left).append(job)
    return submit, left


# The plan -----------------------------------------------------------------------------------------


def varying_overrides(jobs: Sequence[Job]) -> tuple[list[str], set[str]]:
    """The overrides every job shares (shown once) and the keys that vary (shown per job)."""
    per_job = [display_overrides(j.overrides) for j in jobs]
    common = [o for o in per_job[0] if all(o in other for other in per_job)] if per_job else []
    return common, {o.split("=", 1)[0] for overrides in per_job for o in overrides if o not in common}


def plan_table(jobs: Sequence[Job], states: Mapping[str, RunState], gpus: int) -> str:
    """The plan: one row per job (state, run key, overrides, estimated GPU-hours), then the totals."""
    from tabulate import tabulate

    common, _ = varying_overrides(jobs)
    rows = []
    totals = dict.fromkeys(STATES, 0)
    to_run_hours = 0.0
    for job in jobs:
        state = plan_state(states.get(job.run_key))
        totals[state] += 1
        hours = gpus * training_hours(job.config)
        if state in (DEAD, FAILED, TODO):
            to_run_hours += hours
        shown = " ".join(o for o in display_overrides(job.overrides) if o not in common)
        label = plan_label(states.get(job.run_key))
        rows.append([job.index, label, job.run_key, shown or "-", f"{hours:.1f}" if gpus else "-"])
    table = tabulate(rows, headers=["#", "state", "run_key", "overrides", "est. GPU-h"])
    summary = ", ".join(f"{totals[s]} {s}" for s in STATES)
    cost = f"; about {to_run_hours:.0f} GPU-h to run (rough, from the paper's step time)" if gpus else ""
    lines = [table, f"{len(jobs)} jobs: {summary}{cost}"]
    if common:
        lines.insert(0, f"every job: {' '.join(common)}")
    return "\n".join(lines)


# Launching ----------------------------------------------------------------------------------------


@dataclass
class LaunchOutcome:
    """What the launcher returned for a group of jobs: per-job Hydra returns, or the error it raised."""

    jobs: list[Job]
    returns: list[Any] = field(default_factory=list)
    error: BaseException | None = None


def drop_tracking_uri(overrides: Iterable[str]) -> list[str]:
    """``overrides`` without the user's ``tracking.tracking_uri`` (which may hold credentials)."""
    return [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != TRACKING_URI_KEY]


def job_overrides(
    job: Job, experiment: str, tracking_uri: str, parent_run_id: str, sweep_id: str
) -> list[str]:
    """The full override list a job runs with: its sweep overrides, absolute paths, run dir and tracking.

    ``tracking_uri`` replaces the user's ``tracking.tracking_uri`` override, whose credentials
    :func:`prepare` moved into the environment: no secret reaches Hydra's files or submitit's pickles.
    """
    return [
        f"experiment={experiment}",
        *drop_tracking_uri(job.overrides),
        *path_overrides(job.config),
        f"run_dir={_quoted(str(job.run_dir))}",
        "tracking.enabled=true",
        f"tracking.tracking_uri={_quoted(tracking_uri)}",
        f"tracking.parent_run_id={parent_run_id}",
        f"tracking.sweep_id={sweep_id}",
    ]


def _make_launcher(master: DictConfig) -> Any:
    from hydra._internal.callbacks import Callbacks
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.plugins import Plugins
    from hydra.types import HydraContext

    from vice.job import hydra_task

    context = HydraContext(config_loader=GlobalHydra.instance().config_loader(), callbacks=Callbacks(master))
    return Plugins.instance().instantiate_launcher(
        hydra_context=context, task_function=hydra_task, config=master
    )


def wait_for_slurm_jobs(launcher: DictConfig) -> None:
    """Wait until every SLURM job in a launch's submitit folder has ended.

    hydra-submitit-launcher collects results in submission order and gives up at the first job that
    ends without one (cancelled, killed): the jobs after it still run, and their results still count.
    """
    if not str(launcher._target_).endswith("SlurmLauncher"):
        return
    import submitit

    pattern = str(launcher.submitit_folder)
    names = {p.name for p in Path(pattern).parent.iterdir() if p.name[:1].isdigit()}
    arrays = {name.split("_")[0] for name in names if "_" in name}  # an array's own folder holds no job
    jobs: list[Any] = [submitit.SlurmJob(folder=pattern, job_id=name) for name in sorted(names - arrays)]
    while not all(job.done() for job in jobs):
        time.sleep(WAIT_POLL_S)


def launch_groups(groups: Sequence[tuple[DictConfig, list[Job], list[list[str]]]]) -> list[LaunchOutcome]:
    """Launch each group (master config, jobs, their overrides) through its Hydra launcher, all at once.

    Each launch blocks until its jobs end; the groups wait side by side in threads.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import setup_globals

    setup_globals()
    HydraConfig.instance().set_config(groups[0][0])
    launchers = [_make_launcher(master) for master, _, _ in groups]
    offsets = [sum(len(g[1]) for g in groups[:i]) for i in range(len(groups))]

    def run(i: int) -> LaunchOutcome:
        outcome = LaunchOutcome(groups[i][1])
        try:
            outcome.returns = list(launchers[i].launch(groups[i][2], initial_job_idx=offsets[i]))
        except Exception as error:  # e.g. a cancelled job: submitit raises UncompletedJobError
            outcome.error = error
            wait_for_slurm_jobs(groups[i][0].hydra.launcher)
        return outcome

    try:
        with ThreadPoolExecutor(max_workers=len(groups)) as pool:
            return list(pool.map(run, range(len(groups))))
    finally:
        HydraConfig.instance().cfg = None  # type: ignore[assignment]  # this process runs no Hydra job


def _job_error(job: Job, state: RunState | None, outcome: LaunchOutcome) -> str:
    """The best account of why a job did not finish: its traceback, else the end of its log."""
    error_file = job.run_dir / ERROR_FILE
    if error_file.exists():
        return tail(error_file.read_text(), SUMMARY_LINES)
    for ret in outcome.returns:
        if f"run_dir={_quoted(str(job.run_dir))}" in (ret.overrides or []):
            value = ret._return_value
            if isinstance(value, BaseException):
                return tail(f"{type(value).__name__}: {value}", SUMMARY_LINES)
    tags = state.tags if state is not None else {}
    err_log = Path(tags.get("err_path", "/nonexistent"))
    if err_log.is_file():
        lines = [
            line for line in err_log.read_text(errors="replace").splitlines() if PROGRESS_BAR not in line
        ]
        return tail("\n".join(lines), SUMMARY_LINES)
    slurm_id = tags.get("slurm_array_id") or tags.get("slurm_job_id")
    if outcome.error is not None and slurm_id is not None and f"Job {slurm_id} " in str(outcome.error):
        return tail(f"{type(outcome.error).__name__}: {outcome.error}", SUMMARY_LINES)
    return "no error recorded: killed by a signal (preempted, cancelled, out of memory or time), or never started"


def failure_summary(
    failed: Sequence[tuple[Job, RunState | None]], outcomes: Sequence[LaunchOutcome], sweep_dir: Path
) -> str:
    """Every failed job: its overrides, status, run dir, the last lines of its error and its log files."""
    by_job = {id(job): outcome for outcome in outcomes for job in outcome.jobs}
    blocks = [f"{len(failed)} job(s) did not finish:"]
    for job, state in failed:
        status = state.status if state is not None else "no MLflow run"
        tags = state.tags if state is not None else {}
        logs = [tags[k] for k in ("log_path", "err_path") if k in tags] or [f"{sweep_dir}/{job.index}/"]
        error = _job_error(job, state, by_job.get(id(job), LaunchOutcome([job])))
        blocks.append(
            "\n".join(
                [
                    f"- #{job.index} [{' '.join(display_overrides(job.overrides))}] {status}, run dir {job.run_dir}",
                    *(f"    | {line}" for line in error.splitlines()),
                    f"    log: {' '.join(logs)}",
                ]
            )
        )
    return "\n".join(blocks)


def browse_hint(tracking_uri: str, experiment: str, sweep_id: str) -> str:
    """How to look at the runs: the MLflow UI command and the table command."""
    ui = (
        f"mlflow ui --backend-store-uri {tracking_uri}  # then open http://127.0.0.1:5000"
        if tracking_uri.startswith("sqlite:")
        else f"open {tracking_uri}"
    )
    return "\n".join(
        [
            f"browse:  {ui}",
            f"tables:  vice-tables --tracking-uri {tracking_uri} --experiment {experiment}",
            f"this sweep: --sweep-id {sweep_id}",
        ]
    )


def _print_table(tracking_uri: str, experiment: str) -> None:
    try:
        from analysis.tables import render_experiment

        print(render_experiment(tracking_uri, experiment))
    except Exception as error:  # the table is a courtesy; the runs are what counts
        print(f"(no table: {type(error).__name__}: {error})")


def _summarize(tracking_uri: str, experiment: str, sweep_id: str, out_dir: Path) -> None:
    try:
        from analysis.summary import summarize_sweep

        parent = summarize_sweep(tracking_uri, experiment, sweep_id, out_dir)
        if parent is None:
            print(f"(no parent run of sweep {sweep_id} to summarize)")
        else:
            print(f"parent run {parent}: table, figure and claims report in its artifacts ({out_dir})")
    except Exception as error:  # the summary is a courtesy, like the table
        print(f"(no parent-run summary: {type(error).__name__}: {error})")


# The command --------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vice-sweep",
        description="Run a paper experiment's sweep on SLURM or locally, tracked in MLflow; skips finished jobs.",
    )
    parser.add_argument("experiment", help="a file of sweeps/experiment/, e.g. table3_decomposition")
    parser.add_argument(
        "overrides",
        nargs="*",
        help="Hydra overrides: seed=0,1  train.max_steps=100  hydra.launcher.partition=gpu",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="run the experiment's smoke variant on synthetic data"
    )
    parser.add_argument(
        "--launcher",
        default=AUTO,
        help=f"launcher preset: {AUTO} (default) or one of sweeps/hydra/launcher/ ({', '.join(list_launchers())})",
    )
    parser.add_argument("--plan", action="store_true", help="print the plan (state of every job) and stop")
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=Path(DEFAULT_OUTPUT_DIR),
        help="run dirs and the default MLflow store",
    )
    parser.add_argument(
        "--sweep-id", help="continue this sweep (its parent run) instead of starting a new one"
    )
    parser.add_argument(
        "--resubmit-running",
        action="store_true",
        help="also submit jobs MLflow shows as RUNNING that SLURM cannot vouch for (local launcher, or SLURM "
        "not answering): only when they are dead; SLURM jobs that ended are resubmitted without it",
    )
    return parser


@dataclass
class Sweep:
    """A composed, checked sweep ready to plan or launch."""

    experiment: str
    launcher: str
    launcher_reason: str
    hydra_overrides: list[str]
    master: DictConfig
    jobs: list[Job]
    tracking_uri: str
    output_dir: Path
    input_problems: list[str]


def prepare(args: argparse.Namespace) -> Sweep:
    """Compose and check every job of the requested sweep (nothing is written).

    Raises:
        SweepError: bad experiment, launcher, override or config.
    """
    from hydra import compose, initialize_config_dir

    from vice.config import register_schema
    from vice.tracking import credentials_to_environment, resolve_tracking_uri

    experiment = experiment_name(args.experiment, args.smoke)
    hydra_overrides, task_overrides = split_overrides(args.overrides)
    if any(o.split("=", 1)[0] == "experiment" for o in task_overrides):
        raise SweepError("the experiment is the first argument, not an experiment= override")
    launcher, reason = choose_launcher(args.launcher, experiment)
    if not any(o.startswith("hydra/launcher=") for o in hydra_overrides):
        hydra_overrides.insert(0, f"hydra/launcher={launcher}")
    output_dir = args.output_dir.absolute()
    register_schema()
    with initialize_config_dir(config_dir=str(SWEEPS_DIR), version_base="1.3", job_name=experiment):
        try:
            master = compose(
                "config", overrides=[*hydra_overrides, f"experiment={experiment}"], return_hydra_config=True
            )
        except Exception as error:
            raise SweepError(f"the experiment or a hydra override does not compose: {error}") from error
        params = master.hydra.sweeper.params or {}
        composer = Composer()
        jobs = compose_jobs(composer, experiment, params, task_overrides, output_dir)
        designed = compose_jobs(composer, experiment, params, [], output_dir) if task_overrides else jobs
    check_datasets_match(jobs, experiment, *experiment_datasets(designed))
    try:
        uris = {resolve_tracking_uri(j.config.tracking.tracking_uri, output_dir) for j in jobs}
    except ValueError as error:
        raise SweepError(str(error)) from error
    if len(uris) != 1:
        shown = ", ".join(sorted(redact_uri(uri) for uri in uris))
        raise SweepError(f"jobs log to {len(uris)} tracking URIs ({shown}): sweep one tracking.tracking_uri")
    try:
        tracking_uri = credentials_to_environment(uris.pop())  # the jobs inherit the environment
    except ValueError as error:
        raise SweepError(str(error)) from error
    return Sweep(
        experiment,
        launcher,
        reason,
        hydra_overrides,
        master,
        jobs,
        tracking_uri,
        output_dir,
        check_inputs(jobs),
    )


def _resource_groups(sweep: Sweep, todo: Sequence[Job]) -> list[tuple[list[str], list[Job]]]:
    """Jobs grouped by the extra launcher overrides they need (their time limit on GPU presets)."""
    launcher = sweep.master.hydra.launcher
    pinned = any(o.split("=", 1)[0] == "hydra.launcher.timeout_min" for o in sweep.hydra_overrides)
    if launcher_gpus(launcher) == 0 or pinned:
        return [([], list(todo))]
    groups: dict[int, list[Job]] = {}
    for job in todo:
        groups.setdefault(time_limit_min(job.config, int(launcher.timeout_min)), []).append(job)
    return [([f"hydra.launcher.timeout_min={limit}"], jobs) for limit, jobs in sorted(groups.items())]


def _parent_run(sweep: Sweep, sweep_id: str, parents: Sequence[Any], experiment_id: str) -> str:
    from vice.tracking import start_parent_run

    for run in parents:
        if run.data.tags.get("sweep_id") == sweep_id:
            _client(sweep.tracking_uri).update_run(run.info.run_id, status="RUNNING")
            return str(run.info.run_id)
    tags = {
        "experiment": sweep.experiment,
        "smoke": str(is_smoke(sweep.experiment)).lower(),
        "launcher": sweep.launcher,
    }
    return start_parent_run(sweep.tracking_uri, experiment_id, sweep_id, tags=tags)


def run_sweep(sweep: Sweep, sweep_id: str, states: Mapping[str, RunState], resubmit_running: bool) -> int:
    """Create the tracking, launch what is to do, report failures. Returns the exit status (0 = all done).

    Args:
        sweep: from :func:`prepare`.
        sweep_id: the sweep (its parent run) to launch under.
        states: the plan's run states (:func:`fetch_states`, then :func:`check_slurm`).
        resubmit_running: see :func:`jobs_to_submit`.
    """
    from hydra import compose, initialize_config_dir

    from vice.tracking import end_run, prepare_tracking

    todo, running = jobs_to_submit(sweep.jobs, states, resubmit_running)
    if running:
        unvouched = sum(states[j.run_key].slurm_state is None for j in running)
        hint = (
            f" ({unvouched} without SLURM's word: --resubmit-running if they are dead)" if unvouched else ""
        )
        print(f"{len(running)} job(s) are running and left alone{hint}")
    if not todo:
        print(f"nothing to submit: every job of {sweep.experiment} is done or running")
        print(browse_hint(sweep.tracking_uri, sweep.experiment, sweep_id))
        return 0
    try:
        experiment_id = prepare_tracking(sweep.tracking_uri, sweep.experiment)
    except ValueError as error:
        raise SweepError(str(error)) from error
    _, parents = fetch_states(sweep.tracking_uri, sweep.experiment)
    parent = _parent_run(sweep, sweep_id, parents, experiment_id)
    sweep_dir = sweep.output_dir / sweep.experiment / SWEEPS_SUBDIR / sweep_id
    base = [*sweep.hydra_overrides, f"hydra.sweep.dir={_quoted(str(sweep_dir))}"]
    print(
        f"sweep {sweep_id}: submitting {len(todo)} job(s) with launcher {sweep.launcher}; outputs in {sweep_dir}"
    )
    outcomes: list[LaunchOutcome] = []
    failed: list[tuple[Job, RunState | None]] = []
    try:
        with initialize_config_dir(config_dir=str(SWEEPS_DIR), version_base="1.3", job_name=sweep.experiment):
            groups = []
            for extra, jobs in _resource_groups(sweep, todo):
                master = compose(
                    "config",
                    overrides=[*base, *extra, f"experiment={sweep.experiment}"],
                    return_hydra_config=True,
                )
                overrides = [
                    job_overrides(j, sweep.experiment, sweep.tracking_uri, parent, sweep_id) for j in jobs
                ]
                groups.append((master, jobs, overrides))
            outcomes = launch_groups(groups)
        final, _ = fetch_states(sweep.tracking_uri, sweep.experiment)
        failed = [(j, final.get(j.run_key)) for j in todo if plan_state(final.get(j.run_key)) != DONE]
    except BaseException:
        end_run(sweep.tracking_uri, parent, "KILLED")
        print(
            "interrupted: the submitted jobs keep running; re-run vice-sweep to see their state",
            file=sys.stderr,
        )
        raise
    end_run(sweep.tracking_uri, parent, "FAILED" if failed else "FINISHED")
    if failed:
        print(failure_summary(failed, outcomes, sweep_dir))
    else:
        print(f"all {len(todo)} submitted job(s) finished")
        _print_table(sweep.tracking_uri, sweep.experiment)
    _summarize(sweep.tracking_uri, sweep.experiment, sweep_id, sweep_dir / "tables")
    print(browse_hint(sweep.tracking_uri, sweep.experiment, sweep_id))
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """``vice-sweep``: plan, then launch, one experiment's sweep (see the module docstring)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    redact_logs()
    args = _parser().parse_intermixed_args(argv)
    try:
        sweep = prepare(args)
        states = check_slurm(fetch_states(sweep.tracking_uri, sweep.experiment)[0])
        gpus = launcher_gpus(sweep.master.hydra.launcher)
        print(f"experiment {sweep.experiment}; launcher {sweep.launcher} ({sweep.launcher_reason})")
        print(f"MLflow store {sweep.tracking_uri}")
        print(plan_table(sweep.jobs, states, gpus))
        if sweep.input_problems:
            raise SweepError(_listing("missing inputs", sweep.input_problems))
        if args.plan:
            return 0
        sweep_id = args.sweep_id or f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
        return run_sweep(sweep, sweep_id, states, args.resubmit_running)
    except SweepError as error:
        print(f"vice-sweep: nothing submitted: {redact_uri(str(error))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
