"""``vice-sweep`` without SLURM: input checks before submission, the plan, skipping, the cost model,
and whole sweeps through hydra-submitit-launcher's local executor (failures, 8 jobs logging at once)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from vice.config import Config
from vice.sweep import (
    REFERENCE_STEP_S,
    Sweep,
    _parser,
    _resource_groups,
    main,
    prepare,
    step_seconds,
    time_limit_min,
    training_hours,
)
from vice.tracking import flatten_config, prepare_tracking

SMOKE = ["table3_decomposition", "--smoke", "--launcher", "local"]


def sweep_of(argv: list[str]) -> Sweep:
    return prepare(_parser().parse_intermixed_args(argv))


def client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def runs_of(uri: str, experiment: str) -> list[Any]:
    found = client(uri).get_experiment_by_name(experiment)
    return [] if found is None else list(client(uri).search_runs([found.experiment_id]))


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


def _fake_run(uri: str, experiment_id: str, run_key: str, status: str | None) -> None:
    run = client(uri).create_run(experiment_id, tags={"run_key": run_key})
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
    assert "6 jobs: 1 done, 1 running, 1 failed, 3 to do" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db"]


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
    assert main([*argv, "--plan"]) == 0
    assert "2 jobs: 0 done, 0 running, 2 failed, 0 to do" in capsys.readouterr().out


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
    num_params = len(flatten_config(Config()))
    for run in children:
        assert len(run.data.params) == num_params
        loss = client(uri).get_metric_history(run.info.run_id, "train/loss")
        assert sorted(m.step for m in loss) == list(range(1, steps + 1))
