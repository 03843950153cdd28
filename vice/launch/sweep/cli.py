"""``vice-sweep``: run one paper experiment as a Hydra multirun, tracked in MLflow, never duplicated.

Usage::

    vice-sweep EXPERIMENT [--smoke] [--launcher auto|local|slurm|v100|v100_node|v100_8nodes]
               [--plan] [--output-dir DIR] [--sweep-id ID] [--resubmit-running] [overrides ...]

``EXPERIMENT`` names a file in ``sweeps/experiment/`` (``table3_decomposition``); ``--smoke`` picks its
``_smoke`` variant on the synthetic scenes. Overrides are Hydra's: ``seed=0,1`` replaces a sweep axis,
``train.max_steps=100`` changes every job, ``hydra.launcher.partition=gpu`` changes the launcher.

What happens, in order (nothing is submitted until every check has passed):

1. every job of the experiment's sweep (``hydra.sweeper.params`` x overrides) is composed onto the
   typed schema and validated (:mod:`.compose`); its dataset roots and weights must exist, and its
   datasets must be the experiment's own (:mod:`.checks`);
2. each job gets its run key (:func:`vice.launch.tracking.identity.compute_run_key`) and its deterministic
   run dir; MLflow says which are done, running, failed or still to do (:mod:`.state`), and SLURM
   (``squeue``, ``sacct``) which of the runs MLflow shows RUNNING are really dead (killed without cleanup:
   SIGKILL, out of memory, a node failure) (:mod:`.slurm`): that is the plan (:mod:`.plan`; ``--plan``
   stops here);
3. the submitting process creates the MLflow store, the experiment and the sweep's parent run;
4. the jobs still to do (and the failed and dead ones, which resume from their checkpoints into their
   own runs) go to hydra-submitit-launcher, one launch per resource class (time limit, :mod:`.cost`),
   under one sweep id (:mod:`.launch`); ``launch`` blocks until they end, so keep this process alive
   (tmux on a login node);
5. every failed job is listed with its error's last lines and its log, and the command to browse
   the runs is printed.
"""

from __future__ import annotations

import argparse
import logging
import secrets
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from vice.io import LockHeldError
from vice.launch.app import SWEEPS_DIR
from vice.launch.overrides import (
    UnquotablePathError,
    quoted,
    split_overrides,
)
from vice.launch.sweep.checks import check_datasets_match, check_inputs, experiment_datasets
from vice.launch.sweep.compose import Composer, Job, compose_jobs, experiment_name, launcher_world_size
from vice.launch.sweep.cost import launcher_gpus, time_limit_min
from vice.launch.sweep.errors import SweepError, listing
from vice.launch.sweep.launch import (
    AUTO,
    LAUNCHER_FILE,
    LaunchOutcome,
    announce_launcher,
    browse_hint,
    decide_launcher,
    failure_summary,
    job_overrides,
    launch_groups,
    list_launchers,
    record_launcher,
)
from vice.launch.sweep.parents import DRIVER_LOCK_FILE, DRIVER_LOCK_TAG, close_stale_parents, hold_driver_lock
from vice.launch.sweep.plan import DONE, jobs_to_submit, plan_state, plan_table
from vice.launch.sweep.slurm import check_slurm, launch_job_name, read_slurm_record
from vice.launch.sweep.state import RunState, fetch_states
from vice.launch.tracking.identity import DEFAULT_OUTPUT_DIR, is_smoke
from vice.redact import redact_logs, redact_uri

SWEEPS_SUBDIR = "sweeps"


def sweep_dir(output_dir: Path, experiment: str, sweep_id: str) -> Path:
    """A sweep's dir: Hydra's sweep dir, submitit's logs, the driver lock, the launcher it runs on."""
    return output_dir / experiment / SWEEPS_SUBDIR / sweep_id


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
    from vice.launch.tracking.client import credentials_to_environment, resolve_tracking_uri

    experiment = experiment_name(args.experiment, args.smoke)
    hydra_overrides, task_overrides = split_overrides(args.overrides)
    if any(o.split("=", 1)[0] == "experiment" for o in task_overrides):
        raise SweepError("the experiment is the first argument, not an experiment= override")
    output_dir = args.output_dir.absolute()
    record = sweep_dir(output_dir, experiment, args.sweep_id) / LAUNCHER_FILE if args.sweep_id else None
    launcher, reason = decide_launcher(args.launcher, experiment, record)
    if not any(o.startswith("hydra/launcher=") for o in hydra_overrides):
        hydra_overrides.insert(0, f"hydra/launcher={launcher}")
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
        world_size = launcher_world_size(master.hydra.launcher)
        jobs = compose_jobs(composer, experiment, params, task_overrides, output_dir, world_size)
        designed = (
            compose_jobs(composer, experiment, params, [], output_dir, world_size) if task_overrides else jobs
        )
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


def _parent_run(sweep: Sweep, sweep_id: str, parents: Sequence[Any], experiment_id: str, lock: Path) -> str:
    """The sweep's parent run (created, or set back to RUNNING), naming this process's driver lock."""
    from vice.launch.tracking.write import run_logger, set_running, start_parent_run

    for run in parents:
        if run.data.tags.get("sweep_id") == sweep_id:
            set_running(sweep.tracking_uri, run.info.run_id)
            run_logger(sweep.tracking_uri, run.info.run_id).set_tags({DRIVER_LOCK_TAG: str(lock)})
            return str(run.info.run_id)
    tags = {
        "experiment": sweep.experiment,
        "smoke": str(is_smoke(sweep.experiment)).lower(),
        "launcher": sweep.launcher,
        DRIVER_LOCK_TAG: str(lock),
    }
    return start_parent_run(sweep.tracking_uri, experiment_id, sweep_id, tags=tags)


def _close_stale_parents(sweep: Sweep, sweep_id: str) -> None:
    """Close the parent runs no process will close (:mod:`.parents`), saying so; nothing without a store."""
    from vice.launch.tracking.client import mlflow_client, store_exists
    from vice.launch.tracking.read import find_experiment_id

    if not store_exists(sweep.tracking_uri):
        return
    experiment_id = find_experiment_id(mlflow_client(sweep.tracking_uri), sweep.experiment)
    if experiment_id is None:
        return
    for closed in close_stale_parents(sweep.tracking_uri, experiment_id, sweep_id):
        print(f"closed parent run {closed.run_id} {closed.status}: {closed.reason}")


def run_sweep(sweep: Sweep, sweep_id: str, states: Mapping[str, RunState], resubmit_running: bool) -> int:
    """Close stale parent runs, create the tracking, launch what is to do, report failures.

    Args:
        sweep: from :func:`prepare`.
        sweep_id: the sweep (its parent run) to launch under.
        states: the plan's run states (:func:`fetch_states`, then :func:`check_slurm`).
        resubmit_running: see :func:`jobs_to_submit`.

    Returns:
        The exit status (0 = all done).

    Raises:
        SweepError: another live ``vice-sweep`` runs the same sweep id.
    """
    _close_stale_parents(sweep, sweep_id)
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
    folder = sweep_dir(sweep.output_dir, sweep.experiment, sweep_id)
    try:
        driver_lock = hold_driver_lock(folder)
    except LockHeldError as error:
        raise SweepError(
            f"sweep {sweep_id} is being run by {error.holder}: let it finish, or stop it first"
        ) from None
    try:
        record_launcher(folder / LAUNCHER_FILE, sweep.launcher)
        return _launch(sweep, sweep_id, todo, folder)
    finally:
        driver_lock.close()


def _launch(sweep: Sweep, sweep_id: str, todo: Sequence[Job], sweep_dir: Path) -> int:
    """Launch ``todo`` under the sweep's parent run (holding the sweep's driver lock), then report."""
    from hydra import compose, initialize_config_dir

    from vice.launch.tracking.write import end_run, prepare_tracking

    try:
        experiment_id = prepare_tracking(sweep.tracking_uri, sweep.experiment)
    except ValueError as error:
        raise SweepError(str(error)) from error
    _, parents = fetch_states(sweep.tracking_uri, sweep.experiment)
    parent = _parent_run(sweep, sweep_id, parents, experiment_id, sweep_dir / DRIVER_LOCK_FILE)
    base = [*sweep.hydra_overrides, f"hydra.sweep.dir={quoted(str(sweep_dir))}"]
    print(
        f"sweep {sweep_id}: submitting {len(todo)} job(s) with launcher {sweep.launcher}; outputs in {sweep_dir}"
    )
    outcomes: list[LaunchOutcome] = []
    failed: list[tuple[Job, RunState | None]] = []
    try:
        with initialize_config_dir(config_dir=str(SWEEPS_DIR), version_base="1.3", job_name=sweep.experiment):
            groups = []
            for extra, jobs in _resource_groups(sweep, todo):
                name = f"hydra.launcher.name={launch_job_name(sweep.experiment, sweep_id)}"
                master = compose(
                    "config",
                    overrides=[*base, *extra, name, f"experiment={sweep.experiment}"],
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
    _close_stale_parents(sweep, sweep_id)  # earlier sweeps whose jobs this one finished
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
        records = {j.run_key: r for j in sweep.jobs if (r := read_slurm_record(j.run_dir)) is not None}
        states = check_slurm(fetch_states(sweep.tracking_uri, sweep.experiment)[0], records=records)
        gpus = launcher_gpus(sweep.master.hydra.launcher)
        print(f"experiment {sweep.experiment}; launcher {sweep.launcher} ({sweep.launcher_reason})")
        print(f"MLflow store {sweep.tracking_uri}")
        print(plan_table(sweep.jobs, states, gpus))
        if sweep.input_problems:
            raise SweepError(listing("missing inputs", sweep.input_problems))
        announce_launcher("vice-sweep", sweep.launcher, sweep.launcher_reason)
        if args.plan:
            return 0
        sweep_id = args.sweep_id or f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
        return run_sweep(sweep, sweep_id, states, args.resubmit_running)
    except (SweepError, UnquotablePathError) as error:
        print(f"vice-sweep: nothing submitted: {redact_uri(str(error))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
