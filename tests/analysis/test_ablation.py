import pandas as pd
import pytest

from analysis.ablation import build_ablation, metric_columns, swept_axes
from analysis.claims import evaluate_claims
from analysis.render import render
from analysis.summary import sweep_metrics
from analysis.summary import swept_axes as summary_axes


def run(i: int, seed: int, eps: float, stages: int, linear: float, floor: float) -> dict:
    return {
        "run_id": f"r{i}",
        "status": "FINISHED",
        "start_time": i,
        "tags.run_key": f"k{i}",
        "params.seed": seed,
        "params.swav.sinkhorn_epsilon": eps,
        "params.model.num_stages": stages,
        "params.train.max_steps": 400,
        "metrics.eval/linear_miou": linear,
        "metrics.eval/baseline_random_linear_miou": floor,
        "metrics.eval/baseline_rgb_linear_miou": 0.09,
        "metrics.eval/gain_linear_miou": linear - floor,
        "metrics.eval/cluster5_hungarian_miou": 0.2,
        "metrics.eval/cluster20_majority_miou": 0.25,
    }


@pytest.fixture
def runs() -> pd.DataFrame:
    return pd.DataFrame(
        [
            run(0, 0, 0.03, 3, 0.30, 0.15),
            run(1, 1, 0.03, 3, 0.32, 0.17),
            run(2, 0, 0.05, 3, 0.20, 0.15),  # one change: epsilon
            run(3, 0, 0.03, 4, 0.10, 0.15),  # one change: stages
        ]
    )


def test_the_swept_axes_are_the_settings_that_vary_except_the_seed(runs):
    assert swept_axes(runs) == ["model.num_stages", "swav.sinkhorn_epsilon"]
    assert metric_columns(runs) == [
        ("linear", "linear_miou"),
        ("C = 5 hungarian", "cluster5_hungarian_miou"),
        ("C = 20 majority", "cluster20_majority_miou"),
    ]


def test_rows_are_labelled_by_their_one_change_with_floors_and_gain(runs):
    table = build_ablation(runs, "learning_photos")
    (section,) = table.sections
    labels = [label for (label,), _ in section.rows]
    assert labels[0::4] == ["the common setting", "model.num_stages=4", "swav.sinkhorn_epsilon=0.05"]
    assert labels[1:4] == ["↳ random init", "↳ raw colours", "↳ gain over random init"]
    common = section.rows[0][1][0].summary
    assert (common.mean, common.n) == (pytest.approx(31.0), 2)
    assert common.std == pytest.approx(1.41421356, rel=1e-6)  # 30 and 32: sample std sqrt(2)
    gain = section.rows[3][1][0].summary
    assert gain.mean == pytest.approx(15.0)  # (30 - 15 + 32 - 17) / 2 points
    stages_gain = section.rows[7][1][0].summary
    assert stages_gain.mean == pytest.approx(-5.0)
    markdown = render(table, "markdown")
    assert "31.00 ± 1.41 (2)" in markdown and "model.num_stages=4" in markdown


def test_a_sweep_of_our_own_is_summarized_by_its_swept_settings_and_makes_no_paper_claim(runs):
    """The parent-run summary of learning_photos (no paper layout): its cells, best cell, no claims."""
    assert summary_axes(runs, "learning_photos") == ["model.num_stages", "swav.sinkhorn_epsilon"]
    metrics = sweep_metrics(runs, "learning_photos")
    assert metrics["summary/cells"] == 3.0 and metrics["summary/runs_finished"] == 4.0
    assert metrics["summary/best_linear_miou"] == pytest.approx(0.31)  # the common setting's seed mean
    assert evaluate_claims(runs, "learning_photos") == []
