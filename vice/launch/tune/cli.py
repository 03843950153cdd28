"""``vice-tune``: a hyperparameter study with Optuna, ``max_parallel`` trials always in flight on SLURM.

Usage::

    vice-tune STUDY [--output-dir DIR] [--storage PATH|URL] [--launcher PRESET] [--n-trials N]
              [--max-parallel N] [--poll-s S] [overrides ...]

``STUDY`` names a file in ``sweeps/study/`` (``appendix_b``, ``smoke``) or is a path to one. A study file
holds the base experiment, fixed overrides, the search space, the sampler and pruner, the direction,
the objective metric, ``n_trials`` (a *total*), ``max_parallel`` and the launcher preset.

How it runs (this process is the study's only Optuna writer; keep it alive, e.g. in tmux):

- **No batch barrier.** The driver asks Optuna for a trial, composes and validates its config like
  ``vice-sweep`` does, and submits :func:`vice.launch.job.run_job` through submitit; it polls the jobs and asks
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
import logging
import os
import socket
import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from vice.config import to_config
from vice.io import UNNAMED_HOLDER, LockHeldError, lock_file
from vice.launch.app import SWEEPS_DIR
from vice.launch.overrides import TRACKING_URI_KEY, drop_tracking_uri, quoted, split_overrides
from vice.launch.sweep.checks import check_inputs
from vice.launch.sweep.compose import Composer, Job, error_message, experiment_name
from vice.launch.sweep.errors import SweepError
from vice.launch.sweep.launch import (
    LAUNCHER_FILE,
    announce_launcher,
    decide_launcher,
    record_launcher,
    ui_hint,
)
from vice.launch.sweep.slurm import launch_job_name
from vice.launch.tracking.identity import DEFAULT_OUTPUT_DIR
from vice.launch.tune.driver import ATTR_PARENT_RUN, StudySession, drive, finished_count
from vice.launch.tune.executor import SUBMITIT_DIR, make_executor
from vice.launch.tune.results import save_results
from vice.launch.tune.space import trial_overrides
from vice.launch.tune.study import (
    STORAGE_ENV,
    StudyError,
    build_pruner,
    build_sampler,
    build_storage,
    check_search_space,
    check_study,
    list_studies,
    load_study,
    study_id,
)
from vice.redact import redact_logs, redact_uri

log = logging.getLogger(__name__)


LOCK_FILE = "driver.lock"


@contextmanager
def driver_lock(study_dir: Path) -> Iterator[None]:
    """Hold the study's driver lock: two drivers of one study would submit each other's trials.

    Raises:
        StudyError: another driver holds it.
    """
    try:
        handle = lock_file(study_dir / LOCK_FILE, f"vice-tune pid {os.getpid()} on {socket.gethostname()}")
    except LockHeldError as error:
        holder = "another process" if error.holder == UNNAMED_HOLDER else error.holder
        raise StudyError(f"{holder} drives this study ({study_dir / LOCK_FILE}); stop it first") from None
    try:
        yield
    finally:
        handle.close()


def _parent_run(optuna_study: Any, tracking_uri: str, experiment_id: str, name: str, launcher: str) -> str:
    """The study's MLflow parent run: the one its storage names (set back to RUNNING), else a new one."""
    from mlflow.exceptions import MlflowException

    from vice.launch.tracking.client import mlflow_client, with_retry
    from vice.launch.tracking.write import start_parent_run

    known = optuna_study.user_attrs.get(ATTR_PARENT_RUN)
    client = mlflow_client(tracking_uri)
    if known is not None:
        try:
            with_retry(lambda: client.update_run(known, status="RUNNING"))
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


def prepare(args: argparse.Namespace, stack: ExitStack) -> StudySession:
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
    from vice.launch.tracking.client import credentials_to_environment, resolve_tracking_uri
    from vice.launch.tracking.write import prepare_tracking

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
        launcher, reason = decide_launcher(cfg.launcher, experiment, study_dir / LAUNCHER_FILE)
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
        task_overrides = [*drop_tracking_uri(task_overrides), f"{TRACKING_URI_KEY}={quoted(tracking_uri)}"]
    stack.enter_context(driver_lock(study_dir))
    record_launcher(study_dir / LAUNCHER_FILE, launcher)
    announce_launcher("vice-tune", launcher, reason)
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
    # A job name no other driver shares, so that a recycled SLURM id is told apart (trial_job_is_ours).
    name = launch_job_name("tune", sid)
    cluster, executor = make_executor(
        {str(k): v for k, v in launcher_cfg.items()}, study_dir / SUBMITIT_DIR, name
    )
    return StudySession(
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


def run_study(session: StudySession) -> list[Path]:
    """Drive the study to its total (hold the driver lock, see :func:`prepare`), then save its results.

    On an interrupt the SLURM jobs keep running (a re-run adopts them); local jobs are cancelled (a
    re-run asks their parameters again, and they resume from their checkpoints).

    Returns:
        The files written into the study dir.
    """
    from vice.launch.tracking.write import end_run

    print(
        f"study {session.name}: {finished_count(session.optuna_study)}/{session.cfg.n_trials} trials done; up to "
        f"{session.cfg.max_parallel} in flight on {session.cluster}; files in {session.study_dir}; MLflow {session.tracking_uri}"
    )
    try:
        drive(session)
    except BaseException:
        if session.cluster == "local":
            for flight in session.in_flight:
                flight.job.cancel(check=False)
        end_run(session.tracking_uri, session.parent_run_id, "KILLED")
        raise
    written = save_results(session)
    end_run(session.tracking_uri, session.parent_run_id, "FINISHED")
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
            session = prepare(args, stack)
            written = run_study(session)
    except StudyError as error:
        print(f"vice-tune: {redact_uri(str(error))}", file=sys.stderr)
        return 2
    best = session.optuna_study.best_trial
    print(
        f"best: trial {best.number}, {session.cfg.metric} = {best.value:.4f} [{' '.join(trial_overrides(best.params))}]"
    )
    print("\n".join(f"wrote {p}" for p in written))
    print(f"browse:  {ui_hint(session.tracking_uri)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
