"""Smoke sweeps on the real local SLURM cluster (``bash slurm/local-cluster.sh up``), through
hydra-submitit-launcher, into a fresh output dir per test (job ids restart when the cluster does)."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from vice.sweep import main, slurm_available

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.slow,
    pytest.mark.skipif(
        not slurm_available(),
        reason="no local SLURM cluster answers: start it with `bash slurm/local-cluster.sh up`",
    ),
]

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
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out after {WAIT_S} s waiting for {what}")


def job_state(job_id: str) -> str:
    return subprocess.run(
        ["squeue", "-h", "-j", job_id, "-o", "%t"], capture_output=True, text=True
    ).stdout.strip()


def test_smoke_sweep_runs_every_job_under_one_parent_and_a_rerun_submits_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = accounted_jobs()
    assert main(argv(tmp_path, "regions.method=grid,slic")) == 0
    assert "all 4 submitted job(s) finished" in capsys.readouterr().out
    (parent,), children = runs(tmp_path)
    assert parent.info.status == "FINISHED" and len(children) == 4
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert {r.info.status for r in children} == {"FINISHED"}
    (array_id,) = {r.data.tags["slurm_array_id"].split("_")[0] for r in children}
    assert sorted(r.data.tags["slurm_array_id"] for r in children) == [f"{array_id}_{i}" for i in range(4)]
    for run in children:
        assert 0.0 <= run.data.metrics["eval/linear_miou"] <= 1.0
        assert steps(tmp_path, run.info.run_id, "train/loss") == [2, 4, 6, 8, 10]
    submitted = accounted_jobs() - before
    assert submitted == {f"{array_id}_{i}" for i in range(4)}

    after_first = accounted_jobs()
    assert main(argv(tmp_path, "regions.method=grid,slic")) == 0
    assert "nothing to submit" in capsys.readouterr().out
    assert accounted_jobs() == after_first
    assert len(runs(tmp_path)[1]) == 4


def test_requeued_job_resumes_from_its_checkpoint_into_the_same_run(tmp_path: Path) -> None:
    max_steps = 40
    outcome: dict[str, int] = {}
    overrides = ("regions.method=slic", "seed=0", f"train.max_steps={max_steps}", "train.checkpoint_every=2")
    sweep = threading.Thread(target=lambda: outcome.update(rc=main(argv(tmp_path, *overrides))))
    sweep.start()
    run_dirs = tmp_path / EXPERIMENT / "runs"
    wait_for(lambda: list(run_dirs.glob("*/checkpoints/step_*.pt")), "a first checkpoint")
    (job_dir,) = (tmp_path / EXPERIMENT / "sweeps").glob("*/.submitit/[0-9]*")
    job_id = job_dir.name
    subprocess.run(["scontrol", "requeue", job_id], check=True)
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


def test_two_task_ddp_job_finishes_with_one_run(tmp_path: Path) -> None:
    assert main(argv(tmp_path, "regions.method=slic", "seed=0", "hydra.launcher.tasks_per_node=2")) == 0
    (parent,), (run,) = runs(tmp_path)
    assert (parent.info.status, run.info.status) == ("FINISHED", "FINISHED")
    assert run.data.metrics["train/world_size"] == 2.0
    assert 0.0 <= run.data.metrics["eval/linear_miou"] <= 1.0
