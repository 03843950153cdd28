"""One sweep job on real components: the trainer, the evaluation and an SQLite MLflow store."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from conftest import wait_for

from vice.checkpoint import list_checkpoints
from vice.config import Config, register_schema, to_config
from vice.launch.job import (
    ERROR_FILE,
    LOCK_FILE,
    RunDirBusyError,
    lock_holder,
    lock_run_dir,
    run_job,
)
from vice.launch.job_logs import CHECKPOINT_NOTE, checkpoint_path_text, log_job_logs
from vice.launch.overrides import display_overrides
from vice.launch.tracking.identity import compute_run_key, is_smoke, job_dir, semantic_config
from vice.launch.tracking.write import prepare_tracking, run_logger, start_parent_run

EXPERIMENT = "table3_decomposition_smoke"
CHECKPOINT_WAIT_S = 240
#: Deadline for child processes that must stop on their own (a hang fails instead of blocking).
CHILD_WAIT_S = 240


def smoke_config(*overrides: str) -> Config:
    from hydra import compose, initialize_config_dir

    from vice.launch.app import SWEEPS_DIR

    register_schema()
    with initialize_config_dir(config_dir=str(SWEEPS_DIR), version_base="1.3", job_name="test"):
        return to_config(
            compose("config", overrides=[f"experiment={EXPERIMENT}", "regions.method=grid", *overrides])
        )


def tracked(cfg: Config, out: Path, uri: str, parent: str, world_size: int = 1) -> Config:
    """``cfg`` as vice-sweep hands it to a job of ``world_size`` ranks: its run dir, the store, the parent
    run, the sweep id."""
    tracking = dataclasses.replace(
        cfg.tracking, enabled=True, tracking_uri=uri, parent_run_id=parent, sweep_id="sweep-1"
    )
    run_dir = job_dir(out, cfg.experiment, compute_run_key(cfg, world_size))
    return dataclasses.replace(cfg, run_dir=str(run_dir), tracking=tracking)


@pytest.fixture
def store(tmp_path: Path) -> tuple[str, str, str]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment_id = prepare_tracking(uri, EXPERIMENT)
    return uri, experiment_id, start_parent_run(uri, experiment_id, "sweep-1")


def child_runs(uri: str, experiment_id: str) -> list[Any]:
    from mlflow.tracking import MlflowClient

    runs = MlflowClient(uri).search_runs([experiment_id])
    return [r for r in runs if "run_key" in r.data.tags]


def history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    from mlflow.tracking import MlflowClient

    return sorted((m.step, m.value) for m in MlflowClient(uri).get_metric_history(run_id, key))


def test_run_key_ignores_paths_workers_and_tracking_but_not_the_seed() -> None:
    cfg = Config()
    key = compute_run_key(cfg)
    assert len(key) == 16 and int(key, 16) >= 0
    same = [
        dataclasses.replace(cfg, run_dir="/elsewhere", experiment="other"),
        dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root="/data", num_workers=9)),
        dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, threads=3, log_every=7, device="cpu")),
        dataclasses.replace(cfg, tracking=dataclasses.replace(cfg.tracking, enabled=True, sweep_id="s")),
    ]
    assert [compute_run_key(c) for c in same] == [key] * len(same)
    different = [
        dataclasses.replace(cfg, seed=1),
        dataclasses.replace(cfg, views=dataclasses.replace(cfg.views, mask_ratio=0.5)),
        dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, eval_every=5)),
    ]
    assert len({key, *(compute_run_key(c) for c in different)}) == 1 + len(different)


def test_run_key_sees_the_weights_file_name_not_its_folder() -> None:
    def weights(path: str | None) -> Config:
        cfg = Config()
        return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, pretrained=path))

    a, b, c = weights("/a/resnet50.pth"), weights("/b/resnet50.pth"), weights("/a/resnet18.pth")
    assert compute_run_key(a) == compute_run_key(b) != compute_run_key(c) != compute_run_key(weights(None))
    assert semantic_config(a)["model.pretrained"] == "resnet50.pth"
    assert not any(k.startswith("tracking.") or k in ("run_dir", "data.root") for k in semantic_config(a))


def test_job_dir_display_overrides_and_smoke_names() -> None:
    assert job_dir("/out", "table1_main", "0123abcd") == Path("/out/table1_main/runs/0123abcd")
    shown = display_overrides(
        [
            "experiment=table1_main",
            "cell/table1_main=coco_high",
            "seed=2",
            "run_dir='/out/x'",
            "data.root='/d'",
            "tracking.sweep_id=s",
            "hydra.launcher.timeout_min=60",
        ]
    )
    assert shown == ["cell/table1_main=coco_high", "seed=2"]
    assert [is_smoke(n) for n in ("table1_main_smoke", "table1_main", "smoke_table")] == [True, False, False]


def test_run_dir_planned_for_another_config_is_refused_before_any_run(
    store: tuple[str, str, str], tmp_path: Path
) -> None:
    uri, experiment_id, parent = store
    cfg = tracked(smoke_config(), tmp_path, uri, parent)
    cfg = dataclasses.replace(cfg, run_dir=str(tmp_path / "runs" / "0000000000000000"))
    with pytest.raises(RuntimeError, match="planned for run key 0000000000000000"):
        run_job(cfg)
    assert child_runs(uri, experiment_id) == []


def test_failed_job_closes_its_run_failed_and_leaves_the_error(
    store: tuple[str, str, str], tmp_path: Path
) -> None:
    uri, experiment_id, parent = store
    missing = tmp_path / "no-cityscapes"
    cfg = smoke_config("eval.dataset=cityscapes", f"eval.root={missing}")
    cfg = tracked(cfg, tmp_path, uri, parent)
    with pytest.raises(ValueError, match="does not exist"):
        run_job(cfg)
    (run,) = child_runs(uri, experiment_id)
    assert run.info.status == "FAILED"
    message = f"{missing} does not exist: expected the Cityscapes root with leftImg8bit/ and gtFine/"
    assert run.data.tags["error"].splitlines()[-1] == f"vice.data.labelled.DataError: {message}"
    assert run.data.tags["mlflow.parentRunId"] == parent
    error_file = Path(cfg.run_dir) / ERROR_FILE
    assert error_file.read_text().startswith("Traceback") and message in error_file.read_text()
    lock_run_dir(Path(cfg.run_dir)).close()  # the failed job let go of its run dir


def test_lock_holder_names_host_pid_and_slurm_job() -> None:
    host, pid = socket.gethostname(), os.getpid()
    array = {"SLURM_JOB_ID": "12", "SLURM_ARRAY_JOB_ID": "9", "SLURM_ARRAY_TASK_ID": "3"}
    assert lock_holder(array).startswith(f"host {host}, pid {pid}, SLURM job 9_3, since ")
    assert lock_holder({"SLURM_JOB_ID": "12"}).startswith(f"host {host}, pid {pid}, SLURM job 12, since ")
    assert lock_holder({}).startswith(f"host {host}, pid {pid}, no SLURM job, since ")


def _snapshot(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


HOLD_LOCK = """
import sys
from pathlib import Path
from vice.launch.job import lock_run_dir
held = lock_run_dir(Path(sys.argv[1]))
print("locked", flush=True)
sys.stdin.read()
"""


def test_second_job_for_a_run_dir_fails_at_once_and_changes_nothing_until_the_first_dies(
    store: tuple[str, str, str], tmp_path: Path
) -> None:
    uri, experiment_id, parent = store
    cfg = tracked(smoke_config(), tmp_path, uri, parent)
    run_dir = Path(cfg.run_dir)
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "step_00000002.pt").write_bytes(b"the first job's checkpoint")
    (run_dir / "mlflow_run_id").write_text("the-first-jobs-run\n")
    first = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(run_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert first.stdout is not None and first.stdout.readline() == "locked\n"
        before = _snapshot(run_dir)
        assert before[LOCK_FILE].decode().startswith(f"host {socket.gethostname()}, pid {first.pid}, ")

        with pytest.raises(RunDirBusyError) as busy:
            run_job(cfg)

        message = str(busy.value)
        assert message.startswith(
            f"run dir {run_dir} is in use by another job (host {socket.gethostname()}, "
        )
        assert f"pid {first.pid}, no SLURM job, since " in message
        assert _snapshot(run_dir) == before  # no config.yaml, no error.txt, the checkpoint untouched
        assert child_runs(uri, experiment_id) == []
    finally:
        first.kill()  # SIGKILL: no cleanup, as the OOM killer or a node failure would
        first.wait()
    lock_run_dir(run_dir).close()  # the kernel dropped the dead job's lock; its stale file blocks nothing


RUN_RANK = """
import sys
from omegaconf import OmegaConf
from vice.config import to_config
from vice.launch.job import run_job
run_job(to_config(OmegaConf.load(sys.argv[1])))
"""


@pytest.mark.slow
def test_every_rank_of_a_duplicate_ddp_job_stops_when_rank_0_finds_the_run_dir_locked(
    store: tuple[str, str, str], tmp_path: Path
) -> None:
    from omegaconf import OmegaConf

    uri, experiment_id, parent = store
    cfg = tracked(smoke_config("train.device=cpu"), tmp_path, uri, parent, world_size=2)
    config_file = tmp_path / "job.yaml"
    OmegaConf.save(OmegaConf.structured(cfg), config_file)
    held = lock_run_dir(Path(cfg.run_dir))  # the first job
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ranks = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"}
        env["MASTER_PORT"] = str(port)
        ranks.append(
            subprocess.Popen(
                [sys.executable, "-c", RUN_RANK, str(config_file)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    try:
        wait_for(lambda: all(p.poll() is not None for p in ranks), "both ranks to stop", CHILD_WAIT_S, 0.2)
    finally:
        for process in ranks:
            process.kill()
        held.close()
    last_lines = [p.communicate()[1].strip().splitlines()[-1] for p in ranks]  # torch adds "[rankN]: "
    assert [p.returncode for p in ranks] == [1, 1]
    busy = f"vice.launch.job.RunDirBusyError: run dir {cfg.run_dir} is in use by another job (host "
    assert busy in last_lines[0]
    assert f"vice.launch.job.RunDirBusyError: rank 0 found run dir {cfg.run_dir} in use" in last_lines[1]
    assert sorted(p.name for p in Path(cfg.run_dir).iterdir()) == [LOCK_FILE]
    assert child_runs(uri, experiment_id) == []


def test_job_tags_the_mapping_fit_set_it_evaluated_with(store: tuple[str, str, str], tmp_path: Path) -> None:
    uri, experiment_id, parent = store
    overrides = (
        "train.max_steps=2",
        "train.checkpoint_every=2",
        "eval.num_clusters=[7]",
        "eval.probe_steps=5",
    )
    cfg = tracked(smoke_config(*overrides, "eval.mapping_fit_set=train"), tmp_path, uri, parent)
    run_job(cfg)
    (run,) = child_runs(uri, experiment_id)
    assert run.info.status == "FINISHED"
    assert (run.data.tags["mapping_fit_set"], run.data.params["eval.mapping_fit_set"]) == ("train", "train")
    report = json.loads((Path(cfg.run_dir) / "eval" / "step_00000002" / "metrics.json").read_text())
    assert report["tags"]["mapping_fit_set"] == "train"


def _kill_after_first_checkpoint(run_dir: Path) -> None:
    deadline = time.monotonic() + CHECKPOINT_WAIT_S
    while not list_checkpoints(run_dir) and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(os.getpid(), signal.SIGTERM)


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    sys.exit(128 + signum)


@pytest.mark.slow
def test_signal_exit_marks_killed_and_the_rerun_resumes_the_same_run(
    store: tuple[str, str, str], tmp_path: Path
) -> None:
    uri, experiment_id, parent = store
    max_steps = 24
    cfg = smoke_config(f"train.max_steps={max_steps}", "train.checkpoint_every=2", "train.log_every=2")
    cfg = tracked(cfg, tmp_path, uri, parent)
    run_dir = Path(cfg.run_dir)
    previous = signal.signal(signal.SIGTERM, _exit_on_signal)  # what submitit's handler would do
    try:
        threading.Thread(target=_kill_after_first_checkpoint, args=(run_dir,), daemon=True).start()
        with pytest.raises(SystemExit) as stopped:
            run_job(cfg)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert stopped.value.code == 128 + signal.SIGTERM
    (killed,) = child_runs(uri, experiment_id)
    assert killed.info.status == "KILLED"
    resumed_from = int(list_checkpoints(run_dir)[-1].stem.split("_")[1])
    assert 2 <= resumed_from < max_steps

    metrics = run_job(cfg)

    (run,) = child_runs(uri, experiment_id)
    assert (run.info.run_id, run.info.status) == (killed.info.run_id, "FINISHED")
    tags = run.data.tags
    assert tags["resumed_from_step"] == str(resumed_from)
    assert tags["checkpoint_path"] == str((run_dir / "checkpoints" / f"step_{max_steps:08d}.pt").resolve())
    assert (tags["run_key"], tags["smoke"], tags["sweep_id"], tags["experiment"]) == (
        run_dir.name,
        "true",
        "sweep-1",
        EXPERIMENT,
    )
    assert (tags["eval_dataset"], tags["eval_protocol"], tags["mapping_fit_set"]) == (
        "synthetic",
        "full",
        "eval",
    )
    assert [step for step, _ in history(uri, run.info.run_id, "train/world_size")] == [0, resumed_from]
    assert [step for step, _ in history(uri, run.info.run_id, "train/loss")] == list(
        range(2, max_steps + 1, 2)
    )
    assert history(uri, run.info.run_id, "eval/linear_miou") == [(max_steps, metrics["eval/linear_miou"])]
    assert 0.0 <= metrics["eval/linear_miou"] <= 1.0
    assert run.data.params["regions.method"] == "grid" and run.data.params["train.max_steps"] == str(
        max_steps
    )
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"config.yaml", "checkpoint_path.txt", "eval"}
    pictures = {
        Path(a.path).name for a in client.list_artifacts(run.info.run_id, f"eval/step_{max_steps:08d}")
    }
    assert {"metrics.json", "segmentation_000.png", "pca_000.png"} <= pictures


def test_job_logs_are_uploaded_under_logs_and_a_missing_one_is_skipped(
    store: tuple[str, str, str], tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    uri, _, parent = store
    stdout, hydra_log = tmp_path / "7_0_log.out", tmp_path / "job.log"
    stdout.write_text("step      2  loss 2.0794\nstep      4  loss 1.9021\n")
    hydra_log.write_text("[INFO] resumed from step 2\n")
    paths = {
        "log_path": str(stdout),
        "err_path": str(tmp_path / "7_0_log.err"),
        "hydra_log_path": str(hydra_log),
    }
    log_job_logs(run_logger(uri, parent), paths)
    client = MlflowClient(uri)
    assert sorted(a.path for a in client.list_artifacts(parent, "logs")) == [
        "logs/7_0_log.out",
        "logs/job.log",
    ]
    downloaded = Path(client.download_artifacts(parent, "logs/7_0_log.out", str(tmp_path / "down")))
    assert downloaded.read_text() == "step      2  loss 2.0794\nstep      4  loss 1.9021\n"


def test_checkpoint_path_file_names_the_checkpoint_and_says_it_is_not_uploaded() -> None:
    text = checkpoint_path_text(Path("/scratch/run/checkpoints/step_00000024.pt"))
    assert text.splitlines() == ["/scratch/run/checkpoints/step_00000024.pt", CHECKPOINT_NOTE]
    assert CHECKPOINT_NOTE.startswith("The checkpoint is not uploaded to MLflow")
