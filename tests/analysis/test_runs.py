"""Loading runs: the latest FINISHED run per run key, filters, unknown experiments (fixture store)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from analysis.runs import load_runs, pending_runs, select_latest_finished

# Selection ---------------------------------------------------------------------------------------


def test_latest_finished_run_per_run_key_and_pending_runs(uri: str) -> None:
    runs = load_runs(uri, ["table3_decomposition"], sweep_id="sw1")
    assert len(runs) == 9
    finished = select_latest_finished(runs)
    super10 = finished[
        (finished["params.regions.method"] == "slic") & (finished["params.regions.region_size"] == 10)
    ]
    assert sorted(super10["metrics.eval/linear_miou"]) == [0.30, 0.32, 0.34]  # the 0.10 run is superseded
    assert list(super10["params.seed"]) == [0, 1, 2]
    pending = pending_runs(runs)
    assert sorted(zip(pending["params.regions.method"], pending["params.seed"], strict=True)) == [
        ("grid", 2),
        ("pixel", 0),
    ]
    assert runs["params.views.resize_range"].iloc[0] == (0.5, 2.0)
    assert runs["params.model.pretrained"].iloc[0] is None


def test_filters_by_sweep_id_and_git_commit_prefix(uri: str) -> None:
    assert len(load_runs(uri, ["table3_decomposition"])) == 14
    assert len(load_runs(uri, ["table3_decomposition"], sweep_id="smoke1")) == 5
    assert len(load_runs(uri, ["table3_decomposition"], git_commit="abc1")) == 9
    assert len(load_runs(uri, ["table3_decomposition"], git_commit="0000")) == 0


def test_unknown_experiment_names_the_known_ones(uri: str) -> None:
    with pytest.raises(LookupError, match=r"no MLflow experiment 'table9'.*table1_main"):
        load_runs(uri, ["table9"])
