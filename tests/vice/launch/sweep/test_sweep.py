"""``vice-sweep`` without SLURM: input checks before submission, the plan, skipping, the cost model,
and whole sweeps through hydra-submitit-launcher's local executor (failures, 8 jobs logging at once)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from vice.config import Config
from vice.launch.sweep.cli import Sweep, _parser, _resource_groups, main, prepare
from vice.launch.sweep.compose import Job
from vice.launch.sweep.cost import REFERENCE_STEP_S, step_seconds, time_limit_min, training_hours
from vice.launch.sweep.plan import DEAD, FAILED, RUNNING, TODO, jobs_to_submit, plan_label, plan_state
from vice.launch.sweep.slurm import (
    SLURM_UNKNOWN_JOB,
    SlurmQueryError,
    check_slurm,
    parse_job_states,
    query_slurm_states,
    slurm_job_alive,
)
from vice.launch.sweep.state import RunState
from vice.launch.tracking.params import flatten_config
from vice.launch.tracking.write import prepare_tracking

SMOKE = ["table3_decomposition", "--smoke", "--launcher", "local"]


def sweep_of(argv: list[str]) -> Sweep:
    return prepare(_parser().parse_intermixed_args(argv))


def client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def runs_of(uri: str, experiment: str) -> list[Any]:
    found = client(uri).get_experiment_by_name(experiment)
    return [] if found is None else list(client(uri).search_runs([found.experiment_id]))


def job_logs(uri: str, run: Any, into: Path) -> dict[str, str]:
    """The text of each log file under a job run's ``logs/`` artifacts, by file name."""
    paths = [a.path for a in client(uri).list_artifacts(run.info.run_id, "logs")]
    return {
        Path(p).name: Path(client(uri).download_artifacts(run.info.run_id, p, str(into))).read_text()
        for p in paths
    }


def reject(argv: list[str], capsys: pytest.CaptureFixture[str], out: Path) -> str:
    """Run vice-sweep expecting a rejection; return stderr after checking nothing was written."""
    assert main([*argv, "--output-dir", str(out)]) == 2
    assert not out.exists()
    error = capsys.readouterr().err
    assert error.startswith("vice-sweep: nothing submitted: ")
    return error


def test_unknown_key_is_rejected_for_every_job_before_anything_is_written(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    error = reject([*SMOKE, "model.bakbone=resnet18"], capsys, tmp_path / "out")
    assert "Could not override 'model.bakbone'; Key 'bakbone' not in 'ModelConfig' (in 6 job(s)" in error


def test_bad_value_and_unknown_cell_name_the_key(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    error = reject([*SMOKE, "views.mask_ratio=1.5"], capsys, tmp_path / "out")
    assert "views.mask_ratio=1.5 is invalid: within [0, 1]" in error
    error = reject([*SMOKE, "tracking.tracking_uri=ftp://host/db"], capsys, tmp_path / "out")
    assert "tracking.tracking_uri='ftp://host/db' is not supported" in error
    error = reject(
        ["table1_main", "cell/table1_main=coco_huge", "--launcher", "v100"], capsys, tmp_path / "out"
    )
    assert "Could not find 'cell/table1_main/coco_huge'" in error and "coco_high" in error


def test_missing_dataset_root_and_weights_are_rejected(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VICE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("VICE_WEIGHTS_DIR", str(tmp_path / "weights"))
    error = reject(["table3_decomposition", "--launcher", "v100"], capsys, tmp_path / "out")
    root = tmp_path / "data" / "cityscapes"
    assert f"data.root={root} (dataset cityscapes) does not exist: set VICE_DATA_DIR" in error
    assert f"model.pretrained={tmp_path / 'weights' / 'resnet18.pth'} does not exist" in error

    root.mkdir(parents=True)  # a root without the Cityscapes layout
    error = reject(
        ["table3_decomposition", "--launcher", "v100", "model.pretrained=null"], capsys, tmp_path / "out"
    )
    assert (
        f"data.root={root} does not hold dataset cityscapes: {root / 'leftImg8bit' / 'train'} does not exist"
        in error
    )


def test_dataset_that_does_not_match_the_experiment_is_rejected(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    error = reject([*SMOKE, "data.name=cityscapes", f"data.root={tmp_path}"], capsys, tmp_path / "out")
    assert (
        "data.name=cityscapes does not match experiment table3_decomposition_smoke, which trains on synthetic"
        in error
    )
    error = reject(
        ["table4_domain", "--launcher", "v100", "eval.dataset=cocostuff"], capsys, tmp_path / "out"
    )
    assert (
        "evaluation dataset cocostuff does not match experiment table4_domain, which evaluates on cityscapes"
        in error
    )


def test_duplicate_jobs_and_unknown_experiments_are_rejected(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    error = reject([*SMOKE, "seed=3,3"], capsys, tmp_path / "out")
    assert re.search(r"have the same config \(run key [0-9a-f]{16}\): drop the duplicate axis value", error)
    error = reject(["table3", "--smoke"], capsys, tmp_path / "out")
    assert "no experiment 'table3_smoke'" in error and "table3_decomposition" in error


def test_overrides_replace_an_axis_and_apply_to_every_job(tmp_path: Path) -> None:
    sweep = sweep_of([*SMOKE, "--output-dir", str(tmp_path), "seed=7", "train.max_steps=3"])
    assert [j.overrides for j in sweep.jobs] == [
        (f"regions.method={m}", "seed=7", "train.max_steps=3") for m in ("pixel", "grid", "slic")
    ]
    assert [(j.config.regions.method, j.config.seed, j.config.train.max_steps) for j in sweep.jobs] == [
        ("pixel", 7, 3),
        ("grid", 7, 3),
        ("slic", 7, 3),
    ]
    assert [j.run_dir for j in sweep.jobs] == [
        tmp_path / "table3_decomposition_smoke" / "runs" / j.run_key for j in sweep.jobs
    ]
    assert sweep.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"


def _fake_run(
    uri: str, experiment_id: str, run_key: str, status: str | None, tags: dict[str, str] | None = None
) -> None:
    run = client(uri).create_run(experiment_id, tags={"run_key": run_key, **(tags or {})})
    if status is not None:
        client(uri).set_terminated(run.info.run_id, status=status)


def test_plan_shows_each_jobs_state_and_writes_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    argv = [*SMOKE, "--output-dir", str(tmp_path)]
    sweep = sweep_of(argv)
    experiment_id = prepare_tracking(sweep.tracking_uri, sweep.experiment)
    keys = [j.run_key for j in sweep.jobs]
    _fake_run(sweep.tracking_uri, experiment_id, keys[0], "FAILED")
    _fake_run(sweep.tracking_uri, experiment_id, keys[0], "FINISHED")  # a later success wins
    _fake_run(sweep.tracking_uri, experiment_id, keys[1], "KILLED")
    _fake_run(sweep.tracking_uri, experiment_id, keys[2], None)  # still RUNNING
    assert main([*argv, "--plan"]) == 0
    out = capsys.readouterr().out
    states = {key: re.search(rf"  (done|running|failed|to do)\s+{key}", out) for key in keys}
    assert {k: m.group(1) for k, m in states.items() if m} == dict(
        zip(keys, ["done", "failed", "running", "to do", "to do", "to do"], strict=True)
    )
    assert "6 jobs: 1 done, 1 running, 0 dead, 1 failed, 3 to do" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db"]


# SLURM: is a RUNNING run's job alive? (real squeue/sacct outputs of slurm 22.05)

SACCT = "4|PENDING\n1_0|RUNNING\n1_1|CANCELLED by 0\n1_2|RUNNING\n7|NODE_FAIL\n7|RUNNING\n8|REQUEUED\n"
SQUEUE = "5_0|RUNNING\n5_1|COMPLETING\n4|COMPLETED\n"


def test_job_states_are_read_from_sacct_and_squeue_output() -> None:
    assert parse_job_states(SACCT) == {
        "4": "PENDING",
        "1_0": "RUNNING",
        "1_1": "CANCELLED",
        "1_2": "RUNNING",
        "7": "RUNNING",  # job id 7 reused after the controller's state was wiped: the newest wins
        "8": "REQUEUED",
    }
    assert parse_job_states(SQUEUE) == {"5_0": "RUNNING", "5_1": "COMPLETING", "4": "COMPLETED"}
    assert parse_job_states("") == {} and parse_job_states("\nslurm_load_jobs error\n") == {}


def test_only_ended_and_unknown_slurm_jobs_are_dead() -> None:
    alive = ["PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "SUSPENDED", "COMPLETING", "CONFIGURING"]
    ended = ["CANCELLED", "COMPLETED", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "TIMEOUT", "PREEMPTED"]
    assert [slurm_job_alive(s) for s in alive] == [True] * len(alive)
    assert [slurm_job_alive(s) for s in [*ended, SLURM_UNKNOWN_JOB]] == [False] * (len(ended) + 1)
    assert slurm_job_alive("A_STATE_OF_A_NEWER_SLURM")  # unfamiliar: never submit a live job twice


def _state(status: str, **tags: str) -> RunState:
    return RunState(status, f"run-{status}", tags)


def test_running_runs_of_ended_slurm_jobs_are_dead_and_others_keep_their_state() -> None:
    states = {
        "cancelled": _state("RUNNING", slurm_job_id="12", slurm_array_id="12_3"),
        "pending": _state("RUNNING", slurm_job_id="40"),
        "forgotten": _state("RUNNING", slurm_job_id="41"),
        "local": _state("RUNNING"),
        "finished": _state("FINISHED", slurm_job_id="42"),
        "killed": _state("KILLED", slurm_job_id="43"),
    }
    asked: list[Sequence[str]] = []

    def query(job_ids: Sequence[str]) -> dict[str, str]:
        asked.append(job_ids)
        return {"12_3": "CANCELLED", "12": "RUNNING", "40": "PENDING"}

    checked = check_slurm(states, query)
    assert asked == [["12_3", "40", "41"]]  # the array task, not its array's whole job 12
    assert {key: plan_label(state) for key, state in checked.items()} == {
        "cancelled": "dead (SLURM 12_3: CANCELLED)",
        "pending": "running (SLURM 40: PENDING)",
        "forgotten": f"dead (SLURM 41: {SLURM_UNKNOWN_JOB})",
        "local": "running",
        "finished": "done",
        "killed": "failed",
    }

    def down(job_ids: Sequence[str]) -> dict[str, str]:
        raise SlurmQueryError("squeue: Unable to contact slurm controller; sacct: connection refused")

    assert {key: plan_state(state) for key, state in check_slurm(states, down).items()} == {
        "cancelled": RUNNING,  # SLURM did not answer: nothing is declared dead
        "pending": RUNNING,
        "forgotten": RUNNING,
        "local": RUNNING,
        "finished": "done",
        "killed": FAILED,
    }


def _fake_slurm(monkeypatch: pytest.MonkeyPatch, answers: dict[str, tuple[int, str, str]]) -> list[list[str]]:
    """Replace squeue and sacct by canned (exit status, stdout, stderr); returns the commands run."""
    commands: list[list[str]] = []

    def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        commands.append(command)
        if command[0] not in answers:
            raise FileNotFoundError(2, "No such file or directory", command[0])
        code, out, err = answers[command[0]]
        return subprocess.CompletedProcess(command, code, out, err)

    monkeypatch.setattr(subprocess, "run", run)
    return commands


def test_slurm_query_prefers_the_controller_and_needs_one_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    commands = _fake_slurm(
        monkeypatch, {"squeue": (0, "1_0|PENDING\n", ""), "sacct": (0, "1_0|RUNNING\n2|FAILED\n", "")}
    )
    assert query_slurm_states(["1_0", "2"]) == {"1_0": "PENDING", "2": "FAILED"}  # 1_0 was requeued
    assert commands == [
        ["squeue", "-h", "--states=all", "-o", "%i|%T", "-j", "1_0,2"],
        ["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", "1_0,2"],
    ]
    invalid = (1, "", "slurm_load_jobs error: Invalid job id specified\n")  # none is in the controller
    _fake_slurm(monkeypatch, {"squeue": invalid, "sacct": (0, "2|CANCELLED by 1000\n", "")})
    assert query_slurm_states(["1_0", "2"]) == {"2": "CANCELLED"}
    _fake_slurm(monkeypatch, {"squeue": (0, "1_0|RUNNING\n", ""), "sacct": (1, "", "accounting disabled")})
    assert query_slurm_states(["1_0"]) == {"1_0": "RUNNING"}
    _fake_slurm(monkeypatch, {"sacct": (1, "", "sacct: error: Problem talking to the database")})
    with pytest.raises(SlurmQueryError) as neither:
        query_slurm_states(["1_0"])
    assert str(neither.value) == (
        "squeue: [Errno 2] No such file or directory: 'squeue'; sacct: error: Problem talking to the database"
    )


def test_dead_jobs_are_submitted_and_live_slurm_jobs_never_are(tmp_path: Path) -> None:
    from vice.config import Config

    jobs = [Job(i, (f"seed={i}",), Config(), f"key{i}", tmp_path / f"key{i}") for i in range(6)]
    states = {
        "key0": RunState("RUNNING", "r0", {"slurm_job_id": "7"}, slurm_state="PENDING"),
        "key1": RunState("RUNNING", "r1", {"slurm_job_id": "8"}, slurm_state="NODE_FAIL"),
        "key2": RunState("RUNNING", "r2", {}),  # local launcher: SLURM cannot vouch for it
        "key3": RunState("FAILED", "r3", {}),
        "key4": RunState("FINISHED", "r4", {}),
    }
    assert [plan_state(states.get(j.run_key)) for j in jobs] == [RUNNING, DEAD, RUNNING, FAILED, "done", TODO]
    submit, left = jobs_to_submit(jobs, states, resubmit_running=False)
    assert ([j.index for j in submit], [j.index for j in left]) == ([1, 3, 5], [0, 2])
    submit, left = jobs_to_submit(jobs, states, resubmit_running=True)
    assert ([j.index for j in submit], [j.index for j in left]) == ([1, 2, 3, 5], [0])


def test_plan_shows_what_slurm_says_of_running_runs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = [*SMOKE, "--output-dir", str(tmp_path)]
    sweep = sweep_of(argv)
    experiment_id = prepare_tracking(sweep.tracking_uri, sweep.experiment)
    keys = [j.run_key for j in sweep.jobs]
    _fake_run(
        sweep.tracking_uri, experiment_id, keys[0], None, {"slurm_job_id": "3", "slurm_array_id": "3_0"}
    )
    _fake_run(sweep.tracking_uri, experiment_id, keys[1], None, {"slurm_job_id": "9"})
    _fake_run(sweep.tracking_uri, experiment_id, keys[2], None)
    _fake_slurm(
        monkeypatch,
        {
            "squeue": (0, "9|RUNNING\n", ""),
            "sacct": (0, "3_0|OUT_OF_MEMORY\n9|RUNNING\n", ""),
        },
    )
    assert main([*argv, "--plan"]) == 0
    out = capsys.readouterr().out
    assert re.search(rf"  dead \(SLURM 3_0: OUT_OF_MEMORY\)\s+{keys[0]}", out)
    assert re.search(rf"  running \(SLURM 9: RUNNING\)\s+{keys[1]}", out)
    assert re.search(rf"  running\s+{keys[2]}", out)
    assert "6 jobs: 0 done, 2 running, 1 dead, 0 failed, 3 to do" in out


def test_rerun_of_a_finished_sweep_submits_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    argv = [*SMOKE, "--output-dir", str(tmp_path)]
    sweep = sweep_of(argv)
    experiment_id = prepare_tracking(sweep.tracking_uri, sweep.experiment)
    for job in sweep.jobs:
        _fake_run(sweep.tracking_uri, experiment_id, job.run_key, "FINISHED")
    assert main(argv) == 0
    assert (
        "nothing to submit: every job of table3_decomposition_smoke is done or running"
        in capsys.readouterr().out
    )
    assert len(runs_of(sweep.tracking_uri, sweep.experiment)) == 6  # no parent run, no new child
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db"]


def test_step_time_scales_the_papers_high_resolution_step() -> None:
    cfg = Config()
    cfg.views.view_size, cfg.views.num_views, cfg.data.batch_size, cfg.model.backbone = 512, 5, 4, "resnet50"
    assert step_seconds(cfg) == pytest.approx(REFERENCE_STEP_S)
    cfg.views.view_size, cfg.model.backbone = 256, "resnet18"
    assert step_seconds(cfg) == pytest.approx(4.824 * 0.25 * 0.45)
    cfg.train.max_steps = 7552
    assert training_hours(cfg) == pytest.approx(7552 * 4.824 * 0.25 * 0.45 / 3600)
    assert time_limit_min(cfg, cap_min=10_000) == 180  # 1.14 h x 1.5 + 0.5 -> 3 h
    assert time_limit_min(cfg, cap_min=120) == 120


def test_backbones_of_one_sweep_get_their_own_time_limit_launches(tmp_path: Path) -> None:
    sweep = sweep_of(["fig7_backbone", "--launcher", "v100", "--output-dir", str(tmp_path)])
    groups = _resource_groups(sweep, sweep.jobs)
    limits = {
        extra[0]: sorted({j.config.model.backbone for j in jobs} | {j.config.data.name for j in jobs})
        for extra, jobs in groups
    }
    sizes = {extra[0].split("=")[1]: len(jobs) for extra, jobs in groups}
    # COCO 7552 steps at 512 px: ResNet-18 4.55 h, -34 7.08 h, -50 10.1 h, -101 16.2 h of training
    # (x 1.5 + 0.5 h, whole hours, at most v100's 24 h); Cityscapes 558 steps: 0.34-1.2 h.
    assert sizes == {"120": 9, "180": 3, "480": 3, "720": 3, "960": 3, "1440": 3}
    assert limits["hydra.launcher.timeout_min=1440"] == ["cocostuff", "resnet101"]
    pinned = sweep_of(
        [
            "fig7_backbone",
            "--launcher",
            "v100",
            "hydra.launcher.timeout_min=600",
            "--output-dir",
            str(tmp_path),
        ]
    )
    assert [(extra, len(jobs)) for extra, jobs in _resource_groups(pinned, pinned.jobs)] == [([], 24)]


@pytest.mark.slow
def test_failed_jobs_are_all_listed_with_their_error_and_log(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    not_a_dir = tmp_path / "cache-file"
    not_a_dir.write_text("")
    out = tmp_path / "out"
    argv = [
        *SMOKE,
        "--output-dir",
        str(out),
        "regions.method=slic",
        "seed=0,1",
        f"regions.cache_dir={not_a_dir}",
    ]
    assert main(argv) == 1
    printed = capsys.readouterr().out
    assert "2 job(s) did not finish:" in printed
    blocks = printed.split("\n- #")[1:]
    assert [b.split(" ", 1)[0] for b in blocks] == ["0", "1"]
    for block in blocks:
        assert "FAILED, run dir" in block and "NotADirectoryError" in block
        assert re.search(r"log: \S+/\.submitit/\d+/\d+_0_log\.out \S+_0_log\.err", block)
    runs = runs_of(f"sqlite:///{out / 'mlflow.db'}", "table3_decomposition_smoke")
    assert sorted(r.info.status for r in runs) == ["FAILED", "FAILED", "FAILED"]  # both jobs and the sweep
    for run in (r for r in runs if "run_key" in r.data.tags):  # a failed job's logs are in its run
        logs = job_logs(f"sqlite:///{out / 'mlflow.db'}", run, tmp_path / run.info.run_id)
        assert {Path(run.data.tags["log_path"]).name, Path(run.data.tags["err_path"]).name} <= set(logs)
        assert "NotADirectoryError" in "".join(logs.values())
    assert main([*argv, "--plan"]) == 0
    assert "2 jobs: 0 done, 0 running, 0 dead, 2 failed, 0 to do" in capsys.readouterr().out


@pytest.mark.slow
def test_eight_jobs_logging_at_once_lose_no_run_and_no_metric(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    steps = 4
    argv = [
        "table6_dk",
        "--smoke",
        "--launcher",
        "local",
        "--output-dir",
        str(tmp_path),
        "seed=0,1",
        f"train.max_steps={steps}",
        "train.log_every=1",
        "eval.enabled=false",
    ]
    assert main(argv) == 0
    assert "all 8 submitted job(s) finished" in capsys.readouterr().out
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runs = runs_of(uri, "table6_dk_smoke")
    (parent,) = [r for r in runs if "run_key" not in r.data.tags]
    children = [r for r in runs if "run_key" in r.data.tags]
    assert parent.info.status == "FINISHED" and len(children) == 8
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert {r.data.tags["sweep_id"] for r in children} == {parent.data.tags["sweep_id"]}
    assert {r.info.status for r in children} == {"FINISHED"}
    assert len({r.data.tags["run_key"] for r in children}) == 8
    for run in children:  # the training log is an artifact of the run, not only a path in a tag
        stdout = job_logs(uri, run, tmp_path / "logs" / run.info.run_id)[Path(run.data.tags["log_path"]).name]
        assert [line.split()[:2] for line in stdout.splitlines() if line.startswith("step ")] == [
            ["step", str(step)] for step in range(1, steps + 1)
        ]
    num_params = len(flatten_config(Config()))
    for run in children:
        assert len(run.data.params) == num_params
        loss = client(uri).get_metric_history(run.info.run_id, "train/loss")
        assert sorted(m.step for m in loss) == list(range(1, steps + 1))


@pytest.mark.slow
def test_demo_ends_by_printing_the_smoke_table_3_and_its_figure(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """``make demo``: the smoke Table 3 sweep (local processes, which ``--launcher auto`` picks without
    SLURM), then ``vice-tables --experiment table3_decomposition_smoke --compare`` on its MLflow store."""
    from analysis.cli import main as vice_tables
    from analysis.tables import FLOOR_NOTE

    assert main([*SMOKE, "--output-dir", str(tmp_path)]) == 0
    assert "all 6 submitted job(s) finished" in capsys.readouterr().out
    tables = tmp_path / "tables"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    argv = ["--tracking-uri", uri, "--experiment", "table3_decomposition_smoke", "--out", str(tables)]
    assert vice_tables([*argv, "--compare"]) == 0
    printed = capsys.readouterr().out
    markdown = (tables / "table3_decomposition_smoke.md").read_text(encoding="utf-8")
    assert printed.startswith(markdown + "\nfiles: ")  # the table as written, then the files
    lines = printed.splitlines()
    assert lines[:3] == [
        "**Table 3: Representation quality ablation study on low- and high-resolution images (linear mIoU)**",
        "",
        "*64px-resolution Synthetic (smoke)*",
    ]
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in lines if line.startswith("| ")]
    header, rows = cells[0], {row[0]: row[1:] for row in cells[2:]}  # cells[1]: the alignment rule
    columns = ("FPN 1px +mask 25%", "FPN grid 8px +mask 25%", "FPN super 8px +mask 25%")
    assert header == ["", *(name for c in columns for name in (f"{c} paper", f"{c} ours", "Δ"))]
    assert list(rows) == ["mIoU", "↳ random init", "↳ raw colours", "Time"]
    seeds = r"\d+\.\d\d ± \d+\.\d\d \(2\)†"  # mean ± std over seeds 0 and 1, smoke-marked
    miou = rows["mIoU"][1::3]
    assert rows["mIoU"][0::3] == ["n/a"] * 3 and rows["mIoU"][2::3] == [""] * 3  # no paper cell, no Δ
    assert all(re.fullmatch(rf"(\*\*)?{seeds}(\*\*)?", v) for v in miou) and sum("**" in v for v in miou) == 1
    for floor in ("↳ random init", "↳ raw colours"):
        ours = rows[floor][1::3]
        assert rows[floor][0::3] == [""] * 3 and rows[floor][2::3] == [""] * 3
        assert all(re.fullmatch(seeds, v) for v in ours)  # never bold
        assert len(set(ours)) == 1  # a floor does not depend on the regions the model was trained with
    assert all(re.fullmatch(r"((\d+h )?\d+min|\d+s) \(2\)†", v) for v in rows["Time"][1::3])
    assert f"- {FLOOR_NOTE}" in lines
    figure = tables / "table3_decomposition_smoke.png"
    assert f"figure: {figure}" in lines and figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
