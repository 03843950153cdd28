"""vice-tune's smoke study on the real local SLURM cluster (``bash slurm/local-cluster.sh up``), each test
in a fresh output dir (job ids restart when the cluster does)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import slurm_marks
from conftest import wait_for as shared_wait_for

from vice.launch.tune.cli import main

pytestmark = slurm_marks()

STUDY = "tune_smoke"
WAIT_S = 300


def argv(out: Path, *extra: str) -> list[str]:
    return ["smoke", "--launcher", "slurm", "--output-dir", str(out), *extra]


def trials(out: Path) -> list[Any]:
    import optuna
    from optuna.storages.journal import JournalFileBackend

    journal = out / STUDY / "optuna.journal"
    if not journal.exists():
        return []
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
    try:
        return optuna.load_study(study_name=STUDY, storage=storage).get_trials()
    except KeyError:  # the study is not created yet
        return []


def states(out: Path) -> list[str]:
    return [t.state.name for t in trials(out)]


def runs(out: Path) -> tuple[list[Any], list[Any]]:
    """The study's parent run(s) and its trial runs."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    found = client.search_runs([client.get_experiment_by_name(STUDY).experiment_id])
    return [r for r in found if "run_key" not in r.data.tags], [r for r in found if "run_key" in r.data.tags]


def wait_for(predicate: Any, what: str) -> Any:
    return shared_wait_for(predicate, what, WAIT_S, 0.5)


def max_overlap(found: list[Any]) -> int:
    """The most trials that ran at the same time (from their start and end times)."""
    edges = sorted(
        [(t.datetime_start, 1) for t in found] + [(t.datetime_complete, -1) for t in found],
        key=lambda e: (e[0], e[1]),
    )
    running = peak = 0
    for _, delta in edges:
        running += delta
        peak = max(peak, running)
    return peak


def assert_one_run_per_config(out: Path, complete: list[Any]) -> None:
    """Every complete trial has its own MLflow child run under the one parent, none duplicated."""
    from vice.launch.tracking.names import RUN_ID_FILE

    (parent,), children = runs(out)
    assert parent.info.status == "FINISHED"
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    run_ids = {(Path(t.user_attrs["run_dir"]) / RUN_ID_FILE).read_text().strip() for t in complete}
    assert len(run_ids) == len(complete) == len(children)
    assert {r.info.run_id for r in children} == run_ids
    by_id = {r.info.run_id: r for r in children}
    for trial in complete:
        run = by_id[(Path(trial.user_attrs["run_dir"]) / RUN_ID_FILE).read_text().strip()]
        assert run.info.status == "FINISHED"
        assert run.data.metrics["eval/linear_miou"] == pytest.approx(trial.value)
        assert run.data.tags["optuna.state"] == "COMPLETE"
        assert float(run.data.params["views.mask_ratio"]) == pytest.approx(trial.params["views.mask_ratio"])


def test_six_trials_two_in_flight_and_a_killed_driver_finishes_at_exactly_six_on_restart(
    tmp_path: Path,
) -> None:
    driver = subprocess.Popen(
        [sys.executable, "-m", "vice.launch.tune.cli", *argv(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(lambda: states(tmp_path).count("COMPLETE") >= 3, "3 complete trials")
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and nothing else: its jobs run under slurmd
        driver.wait()
    assert "RUNNING" in states(tmp_path)  # trials left behind by the dead driver

    assert main(argv(tmp_path)) == 0
    found = trials(tmp_path)
    complete = [t for t in found if t.state.name == "COMPLETE"]
    assert len(complete) == 6 and "RUNNING" not in states(tmp_path)
    assert max_overlap(found) <= 2
    assert_one_run_per_config(tmp_path, complete)
    best = max(complete, key=lambda t: t.value)
    best_file = tmp_path / STUDY / "tune_smoke_best_smoke.yaml"
    assert f"#{best.number}, eval/linear_miou = {best.value:.4f}" in best_file.read_text()
    assert (tmp_path / STUDY / "param_importances.png").stat().st_size > 0

    assert main(argv(tmp_path)) == 0  # a finished study submits nothing more
    assert len(trials(tmp_path)) == len(found)


def test_a_cancelled_trial_is_marked_failed_and_its_params_asked_again(tmp_path: Path) -> None:
    from vice.launch.tracking.names import RUN_ID_FILE

    outcome: dict[str, int] = {}
    # 40 steps, not the study's 4: the job must still be running when scancel reaches it
    slow = argv(tmp_path, "--n-trials", "2", "train.max_steps=40", "train.checkpoint_every=10")
    driver = threading.Thread(target=lambda: outcome.update(rc=main(slow)))
    driver.start()

    def started() -> Any:
        return next(
            (
                t
                for t in trials(tmp_path)
                if "run_dir" in t.user_attrs and (Path(t.user_attrs["run_dir"]) / RUN_ID_FILE).exists()
            ),
            None,
        )

    victim = wait_for(started, "a trial whose job opened its MLflow run")
    subprocess.run(["scancel", victim.user_attrs["job_id"]], check=True)
    driver.join(WAIT_S)
    assert not driver.is_alive() and outcome["rc"] == 0

    found = {t.number: t for t in trials(tmp_path)}
    assert found[victim.number].state.name == "FAIL"
    (retry,) = [t for t in found.values() if t.user_attrs.get("retry_of") == victim.number]
    assert retry.state.name == "COMPLETE" and retry.params == victim.params
    assert retry.user_attrs["run_dir"] == victim.user_attrs["run_dir"]  # resumed into the same run dir
    complete = [t for t in found.values() if t.state.name == "COMPLETE"]
    assert len(complete) == 2
    assert_one_run_per_config(tmp_path, complete)
