"""A job a later sweep resumed stays in its first sweep's table; Time counts only its active attempts."""

from __future__ import annotations

import os
from typing import Any

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from mlflow_fixtures import CITY_LOW, linear, log_run

from analysis.runs import load_runs
from analysis.tables import build_table3
from vice.launch.tracking.names import ACTIVE_TIME_METRIC

GRID = {**CITY_LOW, "regions.method": "grid", "regions.region_size": 10}
SUPER = {**CITY_LOW, "regions.method": "slic", "regions.region_size": 10}
EXPERIMENT = "table3_decomposition"


@pytest.fixture(scope="module")
def uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Sweep s1 ran seed 0 of grid and super; seed 0 of grid died and sweep s2 resumed it to the end
    (active 57 s, dead for most of its 138 s); seed 1 of super died and s2 resumed it, still running."""
    from mlflow.tracking import MlflowClient

    tracking_uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"
    client: Any = MlflowClient(tracking_uri=tracking_uri)
    moved = {"sweep_ids": "s1,s2"}
    log_run(client, EXPERIMENT, {**SUPER, "seed": 0}, {**linear(0.30), ACTIVE_TIME_METRIC: 55.0}, sweep="s1")
    log_run(
        client,
        EXPERIMENT,
        {**GRID, "seed": 0},
        {**linear(0.28), ACTIVE_TIME_METRIC: 57.0},
        sweep="s2",
        duration_s=138.0,
        tags=moved,
    )
    log_run(client, EXPERIMENT, {**SUPER, "seed": 1}, {}, sweep="s2", status="RUNNING", tags=moved)
    log_run(client, EXPERIMENT, {**GRID, "seed": 5}, linear(0.9), sweep="s3")  # another sweep altogether
    return tracking_uri


def test_the_first_sweeps_selection_keeps_the_runs_a_later_sweep_resumed(uri: str) -> None:
    first = load_runs(uri, [EXPERIMENT], sweep_id="s1")
    assert sorted(first["params.seed"].tolist()) == [0, 0, 1]
    assert set(first["tags.sweep_id"]) == {"s1", "s2"}
    assert len(load_runs(uri, [EXPERIMENT], sweep_id="s2")) == 2
    assert load_runs(uri, [EXPERIMENT], sweep_id="s3")["params.seed"].tolist() == [5]


def test_the_resumed_jobs_cell_is_shown_and_the_running_one_is_a_dash_with_its_reason(uri: str) -> None:
    table = build_table3(load_runs(uri, [EXPERIMENT], sweep_id="s1"), EXPERIMENT)
    low = table.sections[0]
    miou = dict(zip(low.columns, low.rows[0][1], strict=True))
    assert miou["Grid 10px"].ours() == "28.00 (1)"
    assert miou["Super 10px"].ours() == "30.00 (1)"
    assert (
        "incomplete (1 finished) (running in sweep s2): Low-resolution Cityscapes / Super 10px: run "
        "table3_decomposition with `data.name=cityscapes views.view_size=256 regions.method=slic "
        "regions.region_size=10 views.mask_ratio=0.25 model.decoder=fpn seed=1`"
    ) in table.footnotes


def test_time_is_the_active_time_not_the_wall_time_with_the_dead_interval(uri: str) -> None:
    low = build_table3(load_runs(uri, [EXPERIMENT], sweep_id="s1"), EXPERIMENT).sections[0]
    time = dict(zip(low.columns, low.rows[1][1], strict=True))
    assert time["Grid 10px"].ours() == "57s (1)"
    assert time["Super 10px"].ours() == "55s (1)"
