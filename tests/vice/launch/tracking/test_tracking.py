from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Any

import pytest

from analysis.runs import cast_param
from vice.config import Config
from vice.launch.tracking.client import filesystem_type, resolve_tracking_uri
from vice.launch.tracking.names import RUN_ID_FILE
from vice.launch.tracking.params import MAX_PARAM_VALUE_LENGTH, TRUNCATION_MARK, flatten_config, param_text
from vice.launch.tracking.write import end_run, job_tags, open_run, prepare_tracking, start_parent_run
from vice.run_logger import NullLogger

NUM_WRITERS = 8
STEPS_PER_WRITER = 25
METRICS_PER_STEP = ("train/loss", "train/lr", "train/views_per_s")


@pytest.fixture(autouse=True)
def _no_telemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("VICE_GIT_COMMIT", "abc123")
    for key in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(key, raising=False)


@pytest.fixture(scope="module")
def db_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite store per module, created (migrated) once: a fresh store costs seconds."""
    uri = resolve_tracking_uri(None, tmp_path_factory.mktemp("outputs"))
    prepare_tracking(uri, "warmup")
    return uri


@pytest.fixture
def store(db_uri: str, request: pytest.FixtureRequest) -> tuple[str, str, str]:
    """A fresh experiment per test in the shared store: (tracking URI, experiment name, experiment id)."""
    name = f"table3_decomposition-{request.node.name}"
    return db_uri, name, prepare_tracking(db_uri, name)


def _search(uri: str, experiment_id: str, filter_string: str = "") -> Any:
    import mlflow

    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs([experiment_id], filter_string=filter_string)


def _history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    from mlflow.tracking import MlflowClient

    return sorted((m.step, m.value) for m in MlflowClient(uri).get_metric_history(run_id, key))


def test_param_text_renders_values_cast_param_reads_back() -> None:
    assert [param_text(v) for v in (None, True, False, 128, 0.25, [0.5, 1.5], "slic")] == [
        "None",
        "true",
        "false",
        "128",
        "0.25",
        "[0.5, 1.5]",
        "slic",
    ]


def test_long_param_value_is_cut_to_mlflow_limit_deterministically() -> None:
    text = param_text("a" * 7000)
    assert len(text) == MAX_PARAM_VALUE_LENGTH
    assert text == "a" * (MAX_PARAM_VALUE_LENGTH - len(TRUNCATION_MARK)) + TRUNCATION_MARK
    assert param_text("a" * 7000) == text


def test_flatten_config_has_dotted_keys_that_round_trip_through_cast_param() -> None:
    import dataclasses

    cfg = Config()
    flat = flatten_config(cfg)
    assert flat["model.embed_dim"] == "128"
    assert flat["views.resize_range"] == "[0.5, 2.0]"
    assert flat["data.root"] == "None"
    assert flat["model.sync_bn"] == "true"
    expected_keys: list[str] = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        is_section = dataclasses.is_dataclass(value)
        expected_keys += [f"{f.name}.{g.name}" for g in dataclasses.fields(value)] if is_section else [f.name]
    assert list(flat) == expected_keys
    for key, text in flat.items():
        section, _, name = key.rpartition(".")
        value = getattr(getattr(cfg, section), name) if section else getattr(cfg, name)
        expected = tuple(value) if isinstance(value, list) else value
        assert cast_param(text) == expected, key


def test_flatten_config_resolves_omegaconf_interpolations() -> None:
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"model": {"embed_dim": 64}, "swav": {"num_prototypes": "${model.embed_dim}"}})
    assert flatten_config(cfg) == {"model.embed_dim": "64", "swav.num_prototypes": "64"}


def test_resolve_tracking_uri_makes_every_store_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_tracking_uri(None, "outputs") == f"sqlite:///{tmp_path}/outputs/mlflow.db"
    assert resolve_tracking_uri("sqlite:///runs/m.db", "outputs") == f"sqlite:///{tmp_path}/runs/m.db"
    assert resolve_tracking_uri("sqlite:////abs/m.db", "outputs") == "sqlite:////abs/m.db"
    assert resolve_tracking_uri("http://login1:5000", "outputs") == "http://login1:5000"
    with pytest.raises(ValueError, match=r"tracking\.tracking_uri='mlruns' is not supported"):
        resolve_tracking_uri("mlruns", "outputs")


def test_filesystem_type_picks_the_deepest_mount() -> None:
    mounts = "overlay / overlay rw 0 0\nsrv:/home /home nfs4 rw 0 0\n/dev/sda1 /home/local ext4 rw 0 0\n"
    assert filesystem_type(Path("/home/u/outputs/mlflow.db"), mounts) == "nfs4"
    assert filesystem_type(Path("/home/local/mlflow.db"), mounts) == "ext4"
    assert filesystem_type(Path("/tmp/mlflow.db"), mounts) == "overlay"


def test_job_tags_name_the_slurm_job_and_array_task() -> None:
    tags = job_tags({"SLURM_JOB_ID": "17", "SLURM_ARRAY_JOB_ID": "12", "SLURM_ARRAY_TASK_ID": "5"})
    assert (tags["slurm_job_id"], tags["slurm_array_id"], tags["git_commit"]) == ("17", "12_5", "abc123")
    assert "slurm_job_id" not in job_tags({})


def test_null_logger_accepts_everything_and_checks_status() -> None:
    logger = NullLogger()
    logger.log_params({"a": 1})
    logger.log_metrics({"train/loss": 1.0}, step=0)
    logger.close("FINISHED")
    with pytest.raises(ValueError, match="'DONE' is not one of"):
        logger.close("DONE")


def test_params_metrics_tags_and_artifacts_round_trip(store: tuple[str, str, str], tmp_path: Path) -> None:
    uri, experiment, experiment_id = store
    parent = start_parent_run(uri, experiment_id, "sweep-1", tags={"experiment": experiment})
    run_dir = tmp_path / "job0"
    logger = open_run(
        uri,
        experiment,
        run_dir,
        parent_run_id=parent,
        run_name="job0",
        tags={"sweep_id": "sweep-1", "run_key": "k0", "smoke": "true"},
    )
    assert (run_dir / RUN_ID_FILE).read_text() == logger.run_id
    logger.log_params(flatten_config(Config()))
    for step in (10, 20):
        logger.log_metrics({"train/loss": 5.0 - step / 10, "train/lr": 0.1}, step=step)
    logger.set_tags({"eval_protocol": "full"})
    picture = tmp_path / "fig3.png"
    picture.write_bytes(b"\x89PNG")
    logger.log_artifact(picture, "pictures")
    logger.close("FINISHED")
    end_run(uri, parent)

    runs = _search(uri, experiment_id, "tags.run_key = 'k0'")
    assert len(runs) == 1
    row = runs.iloc[0]
    assert row["run_id"] == logger.run_id
    assert row["status"] == "FINISHED"
    assert row["params.model.embed_dim"] == "128"
    assert row["params.swav.num_prototypes"] == "128"
    assert row["metrics.train/loss"] == 3.0  # the latest step's value
    assert row["tags.mlflow.parentRunId"] == parent
    assert (row["tags.sweep_id"], row["tags.git_commit"], row["tags.eval_protocol"]) == (
        "sweep-1",
        "abc123",
        "full",
    )
    assert _history(uri, logger.run_id, "train/loss") == [(10, 4.0), (20, 3.0)]
    from mlflow.tracking import MlflowClient

    artifacts = MlflowClient(uri).list_artifacts(logger.run_id, "pictures")
    assert [a.path for a in artifacts] == ["pictures/fig3.png"]
    assert Path(uri.removeprefix("sqlite:///")).parent.joinpath("mlflow-artifacts").is_dir()


def test_reopened_job_reattaches_to_the_same_run(store: tuple[str, str, str], tmp_path: Path) -> None:
    uri, experiment, experiment_id = store
    run_dir = tmp_path / "job0"
    first = open_run(uri, experiment, run_dir, tags={"run_key": "k0", "hostname": "node1"})
    first.log_params({"model.embed_dim": 128})
    first.log_metrics({"train/loss": 4.0}, step=100)
    first.close("KILLED")  # preempted

    second = open_run(uri, experiment, run_dir, tags={"run_key": "k0", "hostname": "node2"})
    assert second.run_id == first.run_id
    second.log_params({"model.embed_dim": 128})  # the resumed job logs its config again: allowed
    second.log_metrics({"train/loss": 3.0}, step=200)
    second.close("FINISHED")

    runs = _search(uri, experiment_id)
    assert len(runs) == 1
    assert (runs.iloc[0]["status"], runs.iloc[0]["tags.hostname"]) == ("FINISHED", "node2")
    assert _history(uri, first.run_id, "train/loss") == [(100, 4.0), (200, 3.0)]


def test_run_id_file_naming_a_foreign_run_is_rejected(store: tuple[str, str, str], tmp_path: Path) -> None:
    uri, experiment, _ = store
    (tmp_path / "job0").mkdir()
    (tmp_path / "job0" / RUN_ID_FILE).write_text("0" * 32)
    with pytest.raises(LookupError, match="delete the file to start a new run"):
        open_run(uri, experiment, tmp_path / "job0")


def test_prepare_tracking_is_idempotent(store: tuple[str, str, str]) -> None:
    uri, experiment, experiment_id = store
    assert prepare_tracking(uri, experiment) == experiment_id
    assert prepare_tracking(uri, f"{experiment}-other") != experiment_id


def test_experiments_are_tagged_training_so_the_ui_opens_on_runs(store: tuple[str, str, str]) -> None:
    from mlflow.tracking import MlflowClient

    uri, experiment, experiment_id = store
    client = MlflowClient(uri)
    assert client.get_experiment(experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    untagged = client.create_experiment(f"{experiment}-untagged")  # made before vice tagged experiments
    kept = client.create_experiment(
        f"{experiment}-genai", tags={"mlflow.experimentKind": "genai_development"}
    )
    assert prepare_tracking(uri, f"{experiment}-untagged") == untagged
    assert prepare_tracking(uri, f"{experiment}-genai") == kept
    assert client.get_experiment(untagged).tags["mlflow.experimentKind"] == "custom_model_development"
    assert client.get_experiment(kept).tags["mlflow.experimentKind"] == "genai_development"


def _writer(uri: str, experiment: str, parent: str, run_dir: str, index: int, start: Any) -> None:
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    from mlflow.tracking import MlflowClient

    # Import mlflow and connect before the barrier, so that every writer then opens its run at once.
    assert MlflowClient(uri).get_experiment_by_name(experiment) is not None
    start.wait(timeout=240)
    logger = open_run(uri, experiment, run_dir, parent_run_id=parent, tags={"run_key": f"k{index}"})
    logger.log_params({"seed": index, "model.embed_dim": 128})
    for step in range(STEPS_PER_WRITER):
        logger.log_metrics({key: float(index * 1000 + step) for key in METRICS_PER_STEP}, step=step)
    logger.close("FINISHED")


@pytest.mark.slow
def test_concurrent_writers_lose_no_run_and_no_metric(store: tuple[str, str, str], tmp_path: Path) -> None:
    uri, experiment, experiment_id = store
    parent = start_parent_run(uri, experiment_id, "sweep-c")
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(NUM_WRITERS)
    procs = [
        ctx.Process(target=_writer, args=(uri, experiment, parent, str(tmp_path / f"job{i}"), i, start))
        for i in range(NUM_WRITERS)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0] * NUM_WRITERS

    runs = _search(uri, experiment_id, f"tags.mlflow.parentRunId = '{parent}'")
    assert len(runs) == NUM_WRITERS
    assert sorted(runs["tags.run_key"]) == sorted(f"k{i}" for i in range(NUM_WRITERS))
    assert set(runs["status"]) == {"FINISHED"}
    for _, row in runs.iterrows():
        index = int(row["params.seed"])
        for key in METRICS_PER_STEP:
            expected = [(s, float(index * 1000 + s)) for s in range(STEPS_PER_WRITER)]
            assert _history(uri, row["run_id"], key) == expected
