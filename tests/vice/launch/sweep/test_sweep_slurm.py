"""Smoke sweeps on the real local SLURM cluster (``bash slurm/local-cluster.sh up``), through
hydra-submitit-launcher, into a fresh output dir per test (job ids restart when the cluster does)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import slurm_marks
from conftest import wait_for as shared_wait_for

from vice.launch.job import LOCK_FILE
from vice.launch.sweep.cli import main
from vice.launch.sweep.plan import plan_label
from vice.launch.sweep.slurm import SLURM_ENDED_STATES, check_slurm, slurm_job_id
from vice.launch.sweep.state import fetch_states
from vice.launch.tracking.names import RUN_ID_FILE

pytestmark = slurm_marks()

EXPERIMENT = "table3_decomposition_smoke"
WAIT_S = 240


def argv(out: Path, *overrides: str) -> list[str]:
    return ["table3_decomposition", "--smoke", "--launcher", "slurm", "--output-dir", str(out), *overrides]


def runs(out: Path) -> tuple[Any, list[Any]]:
    """The sweep's parent run(s) and the job runs, from the sweep's store."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    found = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    return [r for r in found if "run_key" not in r.data.tags], [r for r in found if "run_key" in r.data.tags]


def steps(out: Path, run_id: str, key: str) -> list[int]:
    from mlflow.tracking import MlflowClient

    return sorted(
        m.step for m in MlflowClient(f"sqlite:///{out / 'mlflow.db'}").get_metric_history(run_id, key)
    )


def accounted_jobs() -> set[str]:
    found = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-o", "JobID"], capture_output=True, text=True, check=True
    )
    return set(found.stdout.split())


def wait_for(predicate: Any, what: str) -> Any:
    return shared_wait_for(predicate, what, WAIT_S, 0.2)


def job_state(job_id: str) -> str:
    return subprocess.run(
        ["squeue", "-h", "-j", job_id, "-o", "%t"], capture_output=True, text=True
    ).stdout.strip()


def sweep_in_thread(out: Path, *overrides: str) -> tuple[threading.Thread, dict[str, int]]:
    outcome: dict[str, int] = {}
    thread = threading.Thread(target=lambda: outcome.update(rc=main(argv(out, *overrides))))
    thread.start()
    return thread, outcome


def first_checkpointed_run(out: Path) -> Path:
    """The run dir of the first job that wrote a checkpoint."""
    found = wait_for(
        lambda: list((out / EXPERIMENT / "runs").glob("*/checkpoints/step_*.pt")), "a checkpoint"
    )
    return found[0].parent.parent


def test_smoke_sweep_on_slurm_cancelled_job_resumes_on_rerun_and_a_finished_sweep_submits_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    overrides = ("regions.method=grid,slic", "train.max_steps=20", "train.checkpoint_every=2")
    before = accounted_jobs()
    sweep, outcome = sweep_in_thread(tmp_path, *overrides)
    cancelled_dir = first_checkpointed_run(tmp_path)
    cancelled_run = (cancelled_dir / RUN_ID_FILE).read_text().strip()
    cancelled = wait_for(lambda: {r.info.run_id: r for r in runs(tmp_path)[1]}.get(cancelled_run), "its run")
    slurm_id = cancelled.data.tags["slurm_array_id"]
    subprocess.run(["scancel", slurm_id], check=True)
    sweep.join(WAIT_S)
    assert not sweep.is_alive() and outcome["rc"] == 1
    printed = capsys.readouterr().out
    assert "1 job(s) did not finish:" in printed and f"KILLED, run dir {cancelled_dir}" in printed
    assert f"/.submitit/{slurm_id}/{slurm_id}_0_log.err" in printed
    (parent,), children = runs(tmp_path)
    assert parent.info.status == "FAILED" and len(children) == 4
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert sorted(r.info.status for r in children) == ["FINISHED", "FINISHED", "FINISHED", "KILLED"]
    (array_id,) = {r.data.tags["slurm_array_id"].split("_")[0] for r in children}
    assert sorted(r.data.tags["slurm_array_id"] for r in children) == [f"{array_id}_{i}" for i in range(4)]
    assert accounted_jobs() - before == {f"{array_id}_{i}" for i in range(4)}

    assert main(argv(tmp_path, *overrides)) == 0  # resubmits the cancelled job only
    assert "submitting 1 job(s)" in capsys.readouterr().out
    parents, children = runs(tmp_path)
    assert len(parents) == 2 and len(children) == 4
    assert {r.info.status for r in children} == {"FINISHED"}
    resumed = {r.info.run_id: r for r in children}[cancelled_run]
    assert 0 < int(resumed.data.tags["resumed_from_step"]) < 20
    assert resumed.data.tags["mlflow.parentRunId"] == next(
        p.info.run_id for p in parents if p.info.run_id != parent.info.run_id
    )
    for run in children:
        assert 0.0 <= run.data.metrics["eval/linear_miou"] <= 1.0
        assert steps(tmp_path, run.info.run_id, "train/loss") == list(range(2, 21, 2))

    after = accounted_jobs()
    assert main(argv(tmp_path, *overrides)) == 0
    assert "nothing to submit" in capsys.readouterr().out
    assert accounted_jobs() == after and len(runs(tmp_path)[0]) == 2


def test_preempted_job_is_requeued_and_resumes_from_its_checkpoint_into_the_same_run(tmp_path: Path) -> None:
    max_steps = 30
    sweep, outcome = sweep_in_thread(
        tmp_path, "regions.method=slic", "seed=0", f"train.max_steps={max_steps}", "train.checkpoint_every=2"
    )
    first_checkpointed_run(tmp_path)
    (job_dir,) = (tmp_path / EXPERIMENT / "sweeps").glob("*/.submitit/[0-9]*")
    job_id = job_dir.name
    # What SLURM sends signal_delay_s before a preemption or the time limit: the trainer checkpoints and
    # hands over to submitit's handler, which runs `scontrol requeue` on the job.
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
    wait_for(lambda: job_state(job_id) == "PD", "the requeued job to be pending")
    subprocess.run(
        ["scontrol", "update", f"jobid={job_id}", "StartTime=now"], check=True
    )  # skip the 2 min hold
    sweep.join(WAIT_S)
    assert not sweep.is_alive() and outcome["rc"] == 0

    _, (run,) = runs(tmp_path)
    resumed_from = int(run.data.tags["resumed_from_step"])
    assert run.info.status == "FINISHED" and 0 < resumed_from < max_steps
    assert run.data.tags["slurm_job_id"] == job_id
    assert steps(tmp_path, run.info.run_id, "train/world_size") == [0, resumed_from]
    assert steps(tmp_path, run.info.run_id, "train/loss") == list(range(2, max_steps + 1, 2))


def test_job_killed_without_cleanup_is_dead_in_slurm_and_resumes_into_its_run_on_rerun(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    max_steps = 40
    overrides = ("regions.method=slic", "seed=0", f"train.max_steps={max_steps}", "train.checkpoint_every=2")
    sweep, outcome = sweep_in_thread(tmp_path, *overrides)
    run_dir = first_checkpointed_run(tmp_path)
    run_id = (run_dir / RUN_ID_FILE).read_text().strip()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (live,) = check_slurm(fetch_states(uri, EXPERIMENT)[0]).values()
    slurm_id = slurm_job_id(live.tags)
    assert plan_label(live) == f"running (SLURM {slurm_id}: RUNNING)"  # SLURM vouches for it: left alone
    holder = (run_dir / LOCK_FILE).read_text()
    assert f"SLURM job {slurm_id}, since " in holder
    pid = re.search(r"pid (\d+),", holder)
    assert pid is not None
    os.kill(int(pid.group(1)), signal.SIGKILL)  # as the OOM killer would: no handler closes the run
    sweep.join(WAIT_S)
    assert not sweep.is_alive() and outcome["rc"] == 1
    _, (killed,) = runs(tmp_path)
    assert (killed.info.run_id, killed.info.status) == (run_id, "RUNNING")
    capsys.readouterr()

    assert main([*argv(tmp_path, *overrides), "--plan"]) == 0
    dead = re.search(rf"  dead \(SLURM {slurm_id}: (\w+)\)\s+{run_dir.name}", capsys.readouterr().out)
    assert dead is not None and dead.group(1) in SLURM_ENDED_STATES
    assert main(argv(tmp_path, *overrides)) == 0
    assert "submitting 1 job(s)" in capsys.readouterr().out
    _, (run,) = runs(tmp_path)
    resumed_from = int(run.data.tags["resumed_from_step"])
    assert (run.info.run_id, run.info.status) == (run_id, "FINISHED") and 0 < resumed_from < max_steps
    assert slurm_job_id(run.data.tags) != slurm_id
    assert steps(tmp_path, run.info.run_id, "train/loss") == list(range(2, max_steps + 1, 2))


def test_two_task_ddp_job_finishes_with_one_run(tmp_path: Path) -> None:
    assert main(argv(tmp_path, "regions.method=slic", "seed=0", "hydra.launcher.tasks_per_node=2")) == 0
    (parent,), (run,) = runs(tmp_path)
    assert (parent.info.status, run.info.status) == ("FINISHED", "FINISHED")
    assert run.data.metrics["train/world_size"] == 2.0
    assert 0.0 <= run.data.metrics["eval/linear_miou"] <= 1.0
