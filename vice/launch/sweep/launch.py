"""Launching: the launcher presets, the overrides a job runs with, hydra-submitit-launcher, the outcome.

Private Hydra APIs, kept on purpose (no public way to run a launcher outside ``@hydra.main``):
``hydra._internal.callbacks.Callbacks`` builds the :class:`hydra.types.HydraContext` a launcher needs,
and ``JobReturn._return_value`` holds a job's exception without raising it (``JobReturn.return_value``
re-raises it).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from vice.config import Config
from vice.io import atomic_write_text
from vice.launch.app import SWEEPS_DIR
from vice.launch.job import ERROR_FILE, tail
from vice.launch.overrides import (
    display_overrides,
    drop_tracking_uri,
    quoted,
)
from vice.launch.sweep.compose import Job
from vice.launch.sweep.errors import SweepError
from vice.launch.sweep.slurm import slurm_available, submitted_jobs, write_slurm_record
from vice.launch.sweep.state import RunState
from vice.launch.tracking.identity import is_smoke

LAUNCHERS_DIR = SWEEPS_DIR / "hydra" / "launcher"

AUTO = "auto"

#: File of a sweep dir or study dir holding the launcher it decided on when it started.
LAUNCHER_FILE = "launcher.txt"

#: What ``--launcher auto`` picks: the paper's 8 x 4 V100 for a paper experiment; for a smoke one the
#: SLURM cluster when ``sinfo`` answers, else local subprocesses.
PAPER_LAUNCHER = "v100_8nodes"

SLURM_LAUNCHER, LOCAL_LAUNCHER = "slurm", "local"

#: Config keys holding paths; vice-sweep passes them to jobs as absolute paths.
PATH_KEYS = ("data.root", "eval.root", "model.pretrained", "regions.cache_dir")

#: Error lines shown per failed job in the summary; log lines holding this are progress bars.
SUMMARY_LINES = 8

PROGRESS_BAR = "%|"

#: Seconds between two looks for a launch's submitted SLURM jobs (:func:`record_submissions`).
RECORD_POLL_S = 0.5

#: Seconds between checks while waiting for SLURM jobs the launcher gave up on.
WAIT_POLL_S = 5


def list_launchers() -> list[str]:
    """Every launcher preset in ``sweeps/hydra/launcher/``."""
    return sorted(p.stem for p in LAUNCHERS_DIR.glob("*.yaml"))


def read_launcher(record: Path) -> str | None:
    """The launcher a sweep or study decided on when it started (:data:`LAUNCHER_FILE`), or None."""
    return record.read_text().strip() if record.is_file() else None


def record_launcher(record: Path, launcher: str) -> None:
    """Persist a sweep's or study's launcher (once: a later decision never replaces it)."""
    if not record.is_file():
        atomic_write_text(record, f"{launcher}\n")


def decide_launcher(requested: str, experiment: str, record: Path | None) -> tuple[str, str]:
    """The launcher of a sweep or study, and why: decided once, when it starts, and kept for good.

    A sweep or study that already runs keeps the launcher recorded in ``record``; ``--launcher auto``
    follows it, another preset is refused (its jobs would resume on another launcher mid-way).

    Args:
        requested: ``--launcher`` (a preset or :data:`AUTO`).
        experiment: the experiment (a smoke one may run on local processes).
        record: the sweep's or study's :data:`LAUNCHER_FILE`; None for a sweep that starts now.

    Raises:
        SweepError: an unknown preset, or one that differs from the recorded launcher.
    """
    recorded = read_launcher(record) if record is not None else None
    if recorded is None:
        return choose_launcher(requested, experiment)
    if requested not in (AUTO, recorded):
        raise SweepError(
            f"--launcher {requested}: this sweep or study runs on {recorded} since it started ({record}); "
            f"launchers never change mid-way: use --launcher {recorded} or {AUTO}, or start a new one"
        )
    return recorded, f"decided when it started ({record})"


def announce_launcher(program: str, launcher: str, reason: str) -> None:
    """Say on stderr, in one line, which launcher runs the jobs and why."""
    print(f"{program}: jobs run on launcher {launcher.upper()}: {reason}", file=sys.stderr, flush=True)


def choose_launcher(requested: str, experiment: str) -> tuple[str, str]:
    """The launcher preset to use, and why (:func:`decide_launcher` keeps it for the sweep or study).

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


def path_overrides(cfg: Config) -> list[str]:
    """Overrides that hand a job every path of its config as an absolute path."""
    found = []
    for key in PATH_KEYS:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value is not None:
            found.append(f"{key}={quoted(os.path.abspath(value))}")
    return found


@dataclass
class LaunchOutcome:
    """What the launcher returned for a group of jobs: per-job Hydra returns, or the error it raised."""

    jobs: list[Job]
    returns: list[Any] = field(default_factory=list)
    error: BaseException | None = None


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
        f"run_dir={quoted(str(job.run_dir))}",
        "tracking.enabled=true",
        f"tracking.tracking_uri={quoted(tracking_uri)}",
        f"tracking.parent_run_id={parent_run_id}",
        f"tracking.sweep_id={sweep_id}",
    ]


def _make_launcher(master: DictConfig) -> Any:
    from hydra._internal.callbacks import Callbacks
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.plugins import Plugins
    from hydra.types import HydraContext

    from vice.launch.job import hydra_task

    context = HydraContext(config_loader=GlobalHydra.instance().config_loader(), callbacks=Callbacks(master))
    return Plugins.instance().instantiate_launcher(
        hydra_context=context, task_function=hydra_task, config=master
    )


def wait_for_slurm_jobs(launcher: DictConfig) -> None:
    """Wait until every SLURM job in a launch's submitit folder has ended.

    hydra-submitit-launcher collects results in submission order and gives up at the first job that
    ends without one (cancelled, killed): the jobs after it still run, and their results still count.
    """
    if not is_slurm(launcher):
        return
    import submitit

    pattern = str(launcher.submitit_folder)
    names = {p.name for p in Path(pattern).parent.iterdir() if p.name[:1].isdigit()}
    arrays = {name.split("_")[0] for name in names if "_" in name}  # an array's own folder holds no job
    jobs: list[Any] = [submitit.SlurmJob(folder=pattern, job_id=name) for name in sorted(names - arrays)]
    while not all(job.done() for job in jobs):
        time.sleep(WAIT_POLL_S)


def is_slurm(launcher: DictConfig) -> bool:
    """True for a hydra-submitit-launcher SLURM preset."""
    return str(launcher._target_).endswith("SlurmLauncher")


def record_submissions(launcher: DictConfig, jobs: Sequence[Job], launched: threading.Event) -> int:
    """Record in each job's run dir the SLURM job submitted for it, as soon as SLURM shows it.

    hydra-submitit-launcher submits one array per launch, task ``i`` for ``jobs[i]``, under the launch's
    own job name (:func:`vice.launch.sweep.slurm.launch_job_name`). A later ``vice-sweep`` reads the
    record (:func:`vice.launch.sweep.slurm.read_slurm_record`): a job still PENDING, with no MLflow run
    yet, is not submitted twice, and a recycled job id is not taken for ours.

    Args:
        launcher: the launch's launcher config; nothing is recorded for a local one.
        jobs: the launch's jobs, in submission order.
        launched: set when the launch returned (its jobs ended): stop polling.

    Returns:
        How many jobs were recorded.
    """
    if not is_slurm(launcher):
        return 0
    waiting = dict(enumerate(jobs))
    while waiting:
        for job_id, record in submitted_jobs(str(launcher.name)).items():
            task = job_id.partition("_")[2]
            if task.isdigit() and int(task) in waiting:
                write_slurm_record(waiting.pop(int(task)).run_dir, record)
        if launched.wait(RECORD_POLL_S):
            break
    return len(jobs) - len(waiting)


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
        master, jobs, overrides = groups[i]
        outcome = LaunchOutcome(jobs)
        launched = threading.Event()
        recorder = threading.Thread(target=record_submissions, args=(master.hydra.launcher, jobs, launched))
        recorder.start()
        try:
            outcome.returns = list(launchers[i].launch(overrides, initial_job_idx=offsets[i]))
        except Exception as error:  # e.g. a cancelled job: submitit raises UncompletedJobError
            outcome.error = error
            wait_for_slurm_jobs(master.hydra.launcher)
        finally:
            launched.set()
            recorder.join()
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
        if f"run_dir={quoted(str(job.run_dir))}" in (ret.overrides or []):
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


def ui_hint(tracking_uri: str) -> str:
    """How to open the MLflow UI on a store: ``mlflow ui`` over a SQLite file, else the server itself."""
    if tracking_uri.startswith("sqlite:"):
        return f"mlflow ui --backend-store-uri {tracking_uri}  # then open http://127.0.0.1:5000"
    return f"open {tracking_uri}"


def browse_hint(tracking_uri: str, experiment: str, sweep_id: str) -> str:
    """How to look at the runs: the MLflow UI command and the table command."""
    return "\n".join(
        [
            f"browse:  {ui_hint(tracking_uri)}",
            f"tables:  vice-tables --tracking-uri {tracking_uri} --experiment {experiment}",
            f"this sweep: --sweep-id {sweep_id}",
        ]
    )
