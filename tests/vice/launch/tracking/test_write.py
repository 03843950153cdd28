"""A job's run on a real SQLite store: no stray run on a kill, every sweep kept, the active time summed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from vice.launch.tracking import write
from vice.launch.tracking.client import resolve_tracking_uri
from vice.launch.tracking.identity import join_sweep_ids, sweep_ids_of
from vice.launch.tracking.names import ACTIVE_TIME_METRIC, RUN_ID_FILE, RUN_TOKEN_FILE, SWEEP_IDS_TAG
from vice.launch.tracking.write import open_run, prepare_tracking


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("VICE_GIT_COMMIT", "abc123")


@pytest.fixture(scope="module")
def uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One real SQLite store per module (a fresh one costs seconds)."""
    found = resolve_tracking_uri(None, tmp_path_factory.mktemp("outputs"))
    prepare_tracking(found, "warmup")
    return found


def _runs(uri: str, experiment: str) -> list[Any]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    return list(client.search_runs([client.get_experiment_by_name(experiment).experiment_id]))


class _Killed(BaseException):
    """What a SIGKILL would do at that point: nothing after it runs."""


def test_a_job_killed_between_creating_its_run_and_writing_the_id_file_leaves_no_stray_run(
    uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    experiment, run_dir = "killed_in_open", tmp_path / "run"
    written = write.atomic_write_text

    def kill_before_id_file(path: Path, text: str, *, durable: bool = True) -> Path:
        if Path(path).name == RUN_ID_FILE:
            raise _Killed
        return written(path, text, durable=durable)

    monkeypatch.setattr(write, "atomic_write_text", kill_before_id_file)
    with pytest.raises(_Killed):
        open_run(uri, experiment, run_dir, tags={"run_key": "k1", "sweep_id": "s1"})
    (stray,) = _runs(uri, experiment)
    assert stray.info.status == "RUNNING" and not (run_dir / RUN_ID_FILE).exists()
    monkeypatch.setattr(write, "atomic_write_text", written)

    logger = open_run(uri, experiment, run_dir, tags={"run_key": "k1", "sweep_id": "s1"})
    assert logger.run_id == stray.info.run_id == (run_dir / RUN_ID_FILE).read_text()
    assert not (run_dir / RUN_TOKEN_FILE).exists()
    logger.close("FINISHED")
    assert [(r.info.run_id, r.info.status) for r in _runs(uri, experiment)] == [
        (stray.info.run_id, "FINISHED")
    ]


def test_a_run_resumed_by_later_sweeps_keeps_every_sweep_it_belonged_to(uri: str, tmp_path: Path) -> None:
    experiment, run_dir = "resumed_twice", tmp_path / "run"
    for sweep in ("s1", "s2", "s1", "s3"):
        open_run(uri, experiment, run_dir, tags={"run_key": "k", "sweep_id": sweep}).close("KILLED")
    (run,) = _runs(uri, experiment)
    assert run.data.tags[SWEEP_IDS_TAG] == "s1,s2,s3" and run.data.tags["sweep_id"] == "s3"
    assert sweep_ids_of(run.data.tags) == ["s1", "s2", "s3"]


def test_sweep_ids_of_a_run_logged_before_the_list_is_its_one_sweep() -> None:
    assert sweep_ids_of({"sweep_id": "old"}) == ["old"]
    assert sweep_ids_of({}) == []
    assert join_sweep_ids(["a", "b"], "a") == "a,b" and join_sweep_ids([], None) == ""


def test_active_time_sums_the_attempts_and_not_the_dead_interval(
    uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    experiment, run_dir = "active_time", tmp_path / "run"
    clock = iter([1000.0, 1030.0, 5000.0, 5012.5])  # open, close (30 s); dead 3970 s; open, close (12.5 s)
    monkeypatch.setattr(write.MLflowLogger, "clock", staticmethod(lambda: next(clock)))
    open_run(uri, experiment, run_dir, tags={"run_key": "k"}).close("KILLED")
    (run,) = _runs(uri, experiment)
    assert run.data.metrics[ACTIVE_TIME_METRIC] == 30.0
    open_run(uri, experiment, run_dir, tags={"run_key": "k"}).close("FINISHED")
    (run,) = _runs(uri, experiment)
    assert run.data.metrics[ACTIVE_TIME_METRIC] == 42.5
