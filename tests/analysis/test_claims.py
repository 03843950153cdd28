"""The paper's claims tested over seeds, the comparison of two sweeps, and a sweep's parent-run summary.

Claims are checked on drawn data with known effects (run frames built in memory, no MLflow): a real
effect is supported, a null effect inconclusive, a reversed effect contradicted, and a one-seed cell
untestable. The statistics are checked against scipy's Welch test on the same arrays and against the
textbook sample sizes of a two-sample t-test. The command line and the parent run use a small MLflow
store logged with the helpers of ``test_analysis_tables``.
"""

from __future__ import annotations

import csv
import io
import itertools
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from mlflow_fixtures import SMOKE, linear, log_run

from analysis import stats
from analysis.claims import (
    CLAIMS,
    EXPERIMENTS,
    claims_csv,
    claims_markdown,
    claims_of,
    evaluate_claims,
    meets,
)
from analysis.cli import main
from analysis.compare import compare_cells
from analysis.runs import runs_frame
from analysis.summary import find_parent_run, run_name
from vice.config import Config
from vice.launch.tracking.params import flatten_config, param_text

DEFAULTS = flatten_config(Config())
#: What sweeps/preset/smoke.yaml sets of the claims' axes (the tests' SMOKE sets data and views).
SMOKE_PRESET = {"model.embed_dim": 16, "swav.num_prototypes": 8, "regions.region_size": 8}
_ids = itertools.count()


def record(
    config: dict[str, Any], miou: float, sweep: str = "s1", status: str = "FINISHED"
) -> dict[str, Any]:
    """One run record as :func:`analysis.runs.load_runs` builds it (params cast back, metric a fraction)."""
    from analysis.runs import cast_param

    params = {**DEFAULTS, **{k: param_text(v) for k, v in config.items()}}
    smoke = params["data.name"] == "synthetic"
    return {
        "run_id": f"{sweep}-{next(_ids):04d}",
        "experiment": "x",
        "status": status,
        "start_time": 0,
        "end_time": 1000,
        **{f"params.{k}": cast_param(v) for k, v in params.items()},
        "metrics.eval/linear_miou": miou,
        "tags.run_key": "|".join(f"{k}={params[k]}" for k in sorted(config)) + f"|{sweep}",
        "tags.sweep_id": sweep,
        "tags.smoke": str(smoke).lower(),
        "tags.eval_protocol": "full",
    }


def drawn(config: dict[str, Any], mean: float, seeds: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    """``seeds`` runs of one cell, linear mIoU drawn from N(mean, 1) points (percent), stored as fractions."""
    values = rng.normal(mean, 1.0, size=seeds)
    return [record({**config, "seed": s}, v / 100.0) for s, v in enumerate(values)]


def cell_values(frame: pd.DataFrame, **where: Any) -> np.ndarray:
    """Percent mIoU of the runs whose params equal ``where``."""
    mask = np.ones(len(frame), dtype=bool)
    for key, value in where.items():
        mask &= (frame[f"params.{key.replace('__', '.')}"] == value).to_numpy()
    return frame.loc[mask, "metrics.eval/linear_miou"].to_numpy() * 100.0


# Statistics --------------------------------------------------------------------------------------


def test_welch_interval_is_scipys() -> None:
    a, b = np.array([40.0, 44.0, 43.0]), np.array([35.0, 37.0])
    result = stats.compare(a, b)
    reference = sps.ttest_ind(a, b, equal_var=False)
    interval = reference.confidence_interval(0.95)
    assert result.effect == pytest.approx(6.0 + 1.0 / 3.0)
    assert (result.low, result.high) == pytest.approx((interval.low, interval.high), rel=1e-12)
    assert result.df == pytest.approx(reference.df, rel=1e-12)
    # by hand: se² = 13/3/3 + 2/2, df = se⁴ / ((13/9)²/2 + 1²/1)
    se2 = (13.0 / 3.0) / 3.0 + 2.0 / 2.0
    df = se2**2 / ((13.0 / 9.0) ** 2 / 2.0 + 1.0)
    half = sps.t.ppf(0.975, df) * np.sqrt(se2)
    assert (result.low, result.high) == pytest.approx((result.effect - half, result.effect + half))
    assert (result.verdict, result.n_a, result.n_b, result.seeds_needed) == (stats.SUPPORTED, 3, 2, None)


@pytest.mark.parametrize(("effect", "seeds"), [(0.5, 64), (0.8, 26), (1.0, 17)])
def test_seeds_needed_are_the_textbook_two_sample_sizes(effect: float, seeds: int) -> None:
    """Cohen's d = 0.5 / 0.8 / 1.0 at α = 0.05 two-sided, 80 % power: 64 / 26 / 17 per group."""
    assert stats.seeds_needed(effect, 1.0, 1.0) == seeds
    assert (
        stats.welch_power(effect, 1.0, 1.0, seeds)
        >= stats.POWER
        > stats.welch_power(effect, 1.0, 1.0, seeds - 1)
    )


def test_verdicts_read_the_interval_and_one_seed_is_untestable() -> None:
    assert stats.compare([1.0, 2.0, 3.0], [11.0, 12.0, 13.0]).verdict == stats.CONTRADICTED
    null = stats.compare([1.0, 2.0, 3.0], [1.5, 2.5, 2.0])
    assert null.verdict == stats.INCONCLUSIVE and null.seeds_needed is None  # Δ = 0: no seeds settle it
    one = stats.compare([50.0], [1.0, 2.0])
    assert one.verdict == stats.UNTESTABLE and one.effect == pytest.approx(48.5) and np.isnan(one.low)
    assert stats.overall_verdict([stats.SUPPORTED, stats.UNTESTABLE]) == stats.INCONCLUSIVE
    assert stats.overall_verdict([stats.SUPPORTED, stats.CONTRADICTED]) == stats.CONTRADICTED
    assert stats.overall_verdict([]) == stats.UNTESTABLE


# Claims on drawn data ----------------------------------------------------------------------------

PIXEL = {"regions.method": "pixel"}


@pytest.fixture(scope="module")
def table3_runs() -> pd.DataFrame:
    """A smoke Table 3 (64 px views, 8 px elements) with known effects, 8 seeds per cell, sd 1 point:
    superpixels +5 over grid (real), grid = 1px with masking (null), 1px without masking +3 over 1px with
    masking (reversed), and a 20 px grid cell with one seed."""
    rng = np.random.default_rng(4)  # a drawn null is significant 1 time in 20: this draw is not (Δ = +0.64)
    base = {**SMOKE, "regions.region_size": 8, "views.mask_ratio": 0.25}
    records = (
        drawn({**base, "regions.method": "slic"}, 45.0, 8, rng)
        + drawn({**base, "regions.method": "grid"}, 40.0, 8, rng)
        + drawn({**base, **PIXEL}, 40.0, 8, rng)
        + drawn({**base, **PIXEL, "views.mask_ratio": 0.0}, 43.0, 8, rng)
        + drawn({**base, "regions.method": "grid", "regions.region_size": 20}, 40.0, 1, rng)
    )
    return runs_frame(records)


def by_id(results: list[Any]) -> dict[str, Any]:
    return {r.claim.id: r for r in results}


def test_known_effects_supported_inconclusive_contradicted_untestable(table3_runs: pd.DataFrame) -> None:
    results = by_id(evaluate_claims(table3_runs, "table3_decomposition_smoke"))
    assert list(results) == [c.id for c in claims_of("table3_decomposition")]

    superpixels = results["table3_superpixels_beat_grid"]
    ((pair,),) = [superpixels.pairs]
    slic = cell_values(table3_runs, regions__method="slic")
    grid = cell_values(table3_runs, regions__method="grid", regions__region_size=8)
    interval = sps.ttest_ind(slic, grid, equal_var=False).confidence_interval(0.95)
    assert pair.comparison.effect == pytest.approx(slic.mean() - grid.mean())
    assert (pair.comparison.low, pair.comparison.high) == pytest.approx((interval.low, interval.high))
    assert pair.comparison.verdict == superpixels.verdict == stats.SUPPORTED
    assert (pair.higher, pair.lower) == ("regions.method=slic", "regions.method=grid")
    assert pair.smoke and pair.paper_effect is None

    grid_pixels = results["table3_grid_beats_pixels"]  # grid 8 px (null) and grid 20 px (one seed)
    verdicts = {p.higher: p.comparison.verdict for p in grid_pixels.pairs}
    assert verdicts == {
        "regions.method=grid, element_size=8": stats.INCONCLUSIVE,
        "regions.method=grid, element_size=20": stats.UNTESTABLE,
    }
    null = next(p for p in grid_pixels.pairs if p.comparison.verdict == stats.INCONCLUSIVE).comparison
    pixels = cell_values(table3_runs, regions__method="pixel", views__mask_ratio=0.25)
    expected = stats.seeds_needed(grid.mean() - pixels.mean(), grid.std(ddof=1), pixels.std(ddof=1))
    assert null.low < 0.0 < null.high and null.seeds_needed == expected == 51
    assert grid_pixels.verdict == stats.INCONCLUSIVE

    masking = results["table3_masking_helps"]
    ((pair,),) = [masking.pairs]
    assert (pair.higher, pair.lower) == ("views.mask_ratio=0.25", "views.mask_ratio=0.0")
    assert pair.comparison.high < 0.0 and masking.verdict == stats.CONTRADICTED
    assert results["table3_fpn_at_low_resolution"].pairs == ()  # one decoder: nothing to compare
    assert results["table3_fpn_at_low_resolution"].verdict == stats.UNTESTABLE


def test_a_one_seed_cell_is_never_supported() -> None:
    """Table 6 with D 64 -> 128 at one seed each and a huge gap: untestable, not supported."""
    coco = {"data.name": "cocostuff", "swav.num_prototypes": 128}
    frame = runs_frame(
        [
            record({**coco, "model.embed_dim": 64, "seed": 0}, 0.10),
            record({**coco, "model.embed_dim": 128, "seed": 0}, 0.90),
        ]
    )
    result = by_id(evaluate_claims(frame, "table6_dk"))["table6_larger_d_helps"]
    pairs = [p for p in result.pairs if p.higher_values]
    assert [(p.higher, p.lower) for p in pairs] == [("model.embed_dim=128", "model.embed_dim=64")]
    assert pairs[0].comparison.effect == pytest.approx(80.0)
    assert pairs[0].comparison.verdict == result.verdict == stats.UNTESTABLE


def test_paper_cells_give_the_papers_differences() -> None:
    """A real-data selection shows the paper's cells: each claim's paper Δ from paper_results.json."""
    frame = runs_frame(
        [record({"data.name": "cocostuff", "model.embed_dim": 64, "swav.num_prototypes": 64, "seed": 0}, 0.2)]
    )
    results = by_id(evaluate_claims(frame, "table6_dk"))
    d_pairs = {(p.context, p.higher): p.paper_effect for p in results["table6_larger_d_helps"].pairs}
    assert d_pairs == {
        ("data.name=cocostuff, swav.num_prototypes=128", "model.embed_dim=128"): pytest.approx(27.2 - 26.91),
        ("data.name=cocostuff, swav.num_prototypes=128", "model.embed_dim=256"): pytest.approx(27.25 - 27.2),
        ("data.name=cocostuff, swav.num_prototypes=256", "model.embed_dim=256"): pytest.approx(26.08 - 26.36),
    }
    k_pairs = [p.paper_effect for p in results["table6_k_beyond_128_hurts"].pairs]
    assert k_pairs == [pytest.approx(27.2 - 26.36), pytest.approx(27.25 - 26.08)]  # K 128 over K 256


def test_smoke_experiments_map_onto_the_same_claims() -> None:
    """Each smoke sweep's cells (sweeps/experiment/*_smoke.yaml) give the pairs the claims expect."""
    smoke_cells = {
        "table5_hparams_smoke": [
            {"views.mask_ratio": 0.5},
            {"views.mask_ratio": 0.25},
            {"views.mask_ratio": 0.5, "swav.num_prototypes": 64},
            {"views.mask_ratio": 0.5, "model.embed_dim": 128},
        ],
        "table6_dk_smoke": [
            {"model.embed_dim": d, "swav.num_prototypes": k} for d in (8, 16) for k in (8, 16)
        ],
        "fig5_element_size_smoke": [
            {"regions.method": m, "regions.region_size": s, "views.view_size": 64}
            for m in ("slic", "grid")
            for s in (6, 12)
        ],
        "fig7_backbone_smoke": [{"model.backbone": b} for b in ("resnet18", "resnet34")],
    }
    pairs = {}
    for experiment, cells in smoke_cells.items():
        frame = runs_frame(
            [record({**SMOKE, **SMOKE_PRESET, **c, "seed": s}, 0.3) for c in cells for s in (0, 1)]
        )
        for result in evaluate_claims(frame, experiment):
            pairs[result.claim.id] = [(p.higher, p.lower) for p in result.pairs]
    assert pairs == {
        "table5_masking_helps": [],
        "table5_more_views_help": [],
        "table5_larger_d_helps": [("model.embed_dim=128", "model.embed_dim=16")],
        "table6_larger_d_helps": [("model.embed_dim=16", "model.embed_dim=8")] * 2,
        "table6_k_beyond_128_hurts": [],
        "fig5_superpixels_beat_grid": [("regions.method=slic", "regions.method=grid")] * 2,
        "fig5_element_size_sweet_spot": [],
        "fig7_deeper_backbone_helps": [("model.backbone=resnet34", "model.backbone=resnet18")],
        "fig7_deeper_backbone_hurts_on_cityscapes": [],
    }


def test_element_size_sweet_spot_compares_the_best_interior_size_with_both_ends() -> None:
    rng = np.random.default_rng(3)
    base = {"data.name": "cocostuff", "views.view_size": 512, "regions.method": "slic"}
    records = []
    for size, mean in ((5, 30.0), (10, 34.0), (20, 36.0), (40, 31.0)):
        records += drawn({**base, "regions.region_size": size}, mean, 4, rng)
    result = by_id(evaluate_claims(runs_frame(records), "fig5_element_size"))["fig5_element_size_sweet_spot"]
    assert [(p.higher, p.lower) for p in result.pairs] == [
        ("element_size=20", "element_size=5"),
        ("element_size=20", "element_size=40"),
    ]
    assert result.verdict == stats.SUPPORTED


def test_every_claim_names_a_known_experiment_and_its_axes() -> None:
    for claim in CLAIMS:
        axes = EXPERIMENTS[claim.experiment][0]
        named = [a for a, _, _ in (*claim.higher, *claim.lower, *claim.where)] + list(claim.free)
        assert set(named) <= set(axes), claim.id
        assert (claim.axis in axes) == (claim.kind != "contrast"), claim.id
    assert meets([("views.mask_ratio", ">", 0.0)], ["views.mask_ratio"], [0.25])
    assert not meets([("views.mask_ratio", ">", 0.0)], ["views.mask_ratio"], [None])


def test_reports_markdown_and_csv(table3_runs: pd.DataFrame) -> None:
    results = evaluate_claims(table3_runs, "table3_decomposition_smoke")
    text = claims_markdown(results, "table3_decomposition_smoke")
    assert "## Table 3: superpixels beat grid cells of the same base element size: **supported**" in text
    assert "## Table 3: region masking beats no masking: **contradicted**" in text
    assert "No pair of cells in this selection compares it." in text
    rows = list(csv.DictReader(io.StringIO(claims_csv(results))))
    superpixels = next(r for r in rows if r["claim"] == "table3_superpixels_beat_grid")
    pair = results[0].pairs[0].comparison
    assert float(superpixels["ci_low"]) == pytest.approx(pair.low, abs=1e-4)
    assert (superpixels["verdict"], superpixels["n_higher"], superpixels["smoke"]) == (
        "supported",
        "8",
        "true",
    )
    assert len(rows) == sum(max(1, len(r.pairs)) for r in results)


# Comparing two sweeps ----------------------------------------------------------------------------


def test_compare_sweeps_delta_interval_and_settings_that_differ() -> None:
    base = {**SMOKE, "regions.region_size": 8}
    a = [
        record({**base, "regions.method": m, "seed": s}, v, "A")
        for m, vs in (("slic", (0.40, 0.42)), ("grid", (0.35, 0.36)))
        for s, v in enumerate(vs)
    ]
    b = [
        record({**base, "regions.method": "slic", "seed": s}, v, "B")
        for s, v in enumerate((0.46, 0.47, 0.48))
    ]
    b += [
        record({**base, "regions.method": "grid", "train.max_steps": 20, "seed": s}, 0.36, "B")
        for s in (0, 1)
    ]
    b += [record({**base, "regions.method": "pixel", "seed": 0}, 0.30, "B")]
    results = {
        r.cell.split("regions.method=")[1].split(",")[0]: r
        for r in compare_cells(runs_frame(a), runs_frame(b), "table3_decomposition_smoke")
    }
    assert list(results) == ["pixel", "grid", "slic"]
    slic = results["slic"].comparison
    interval = sps.ttest_ind([47.0, 46.0, 48.0], [40.0, 42.0], equal_var=False).confidence_interval(0.95)
    assert slic.effect == pytest.approx(6.0) and (slic.low, slic.high) == pytest.approx(
        (interval.low, interval.high)
    )
    assert results["slic"].differences == ()
    assert results["grid"].differences == ("train.max_steps: A=200, B=20",)
    assert (results["pixel"].only_in, results["pixel"].comparison.verdict) == ("B", stats.UNTESTABLE)


# The command line and the parent run -------------------------------------------------------------


@pytest.fixture()
def store(tmp_path: Path) -> str:
    """A smoke Table 3 in two sweeps (s1: 3 seeds per cell, s2: grid re-run), s1 with a parent run."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    client.create_experiment(
        "table3_decomposition_smoke", artifact_location=(tmp_path / "artifacts").as_uri()
    )
    for sweep, values in (
        ("s1", {"slic": (0.44, 0.45, 0.46), "grid": (0.40, 0.41, 0.42), "pixel": (0.30, 0.31, 0.36)}),
        ("s2", {"grid": (0.50, 0.51)}),
    ):
        for method, seeds in values.items():
            for seed, value in enumerate(seeds):
                config = {**SMOKE, "regions.method": method, "regions.region_size": 8, "seed": seed}
                log_run(client, "table3_decomposition_smoke", config, linear(value), tags={"sweep_id": sweep})
    experiment = client.get_experiment_by_name("table3_decomposition_smoke").experiment_id
    client.create_run(
        experiment,
        run_name="s1",
        tags={"sweep_id": "s1", "launcher": "local", "experiment": "table3_decomposition_smoke"},
    )
    return uri


def test_claims_command_prints_a_verdict_per_table3_claim(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "tables"
    argv = [
        "--tracking-uri",
        store,
        "--experiment",
        "table3_decomposition_smoke",
        "--sweep-id",
        "s1",
        "--claims",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    for claim in claims_of("table3_decomposition"):
        assert f"## Table 3: {claim.text}: **" in printed
    assert (
        "| regions.method=slic | regions.method=grid | 45.00 ± 1.00 (3)† | 41.00 ± 1.00 (3)† | +4.00 |"
        in printed
    )
    assert (out / "table3_decomposition_smoke_claims.csv").exists()

    parent = find_parent_run(store, "table3_decomposition_smoke", "s1")
    assert f"parent run: {parent}" in printed
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store)
    run = client.get_run(parent)
    assert run.info.run_name == run_name("table3_decomposition_smoke", "s1")
    assert run.data.params["swept_axes"] == "regions.method, element_size"
    assert (run.data.params["launcher"], run.data.params["git_commit"]) == ("local", "fff0000")
    assert run.data.metrics["summary/runs_finished"] == 9.0
    assert run.data.metrics["summary/best_linear_miou"] == pytest.approx(0.45)
    assert run.data.metrics["claims/supported"] == 2.0  # superpixels > grid, grid > 1px
    artifacts = {Path(a.path).name for a in client.list_artifacts(parent, "summary")}
    assert {
        "table3_decomposition_smoke.md",
        "table3_decomposition_smoke.tex",
        "table3_decomposition_smoke.csv",
        "table3_decomposition_smoke.png",
        "table3_decomposition_smoke_claims.md",
        "table3_decomposition_smoke_claims.csv",
    } <= artifacts
    assert main(argv) == 0  # a second summary keeps the write-once params and overwrites the rest


def test_compare_sweeps_command(store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "--tracking-uri",
        store,
        "--experiment",
        "table3_decomposition_smoke",
        "--compare-sweeps",
        "s1",
        "s2",
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert (
        "| data.name=synthetic, views.view_size=64, regions.method=grid, element_size=8, views.mask_ratio=0.25, model.decoder=fpn | 41.00 ± 1.00 (3) | 50.50 ± 0.71 (2) | +9.50 |"
        in printed
    )
    assert "only in A" in printed
    assert (tmp_path / "table3_decomposition_smoke_s1_vs_s2.csv").exists()
    assert main([*argv[:-5], "--compare-sweeps", "s1", "nope", "--out", str(tmp_path)]) == 1


def test_vice_sweep_summarizes_its_parent_run_at_the_end(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from vice.launch.sweep.cli import _summarize

    _summarize(store, "table3_decomposition_smoke", "s1", tmp_path / "tables")
    parent = find_parent_run(store, "table3_decomposition_smoke", "s1")
    assert capsys.readouterr().out.startswith(f"parent run {parent}: table, figure and claims report")
    assert (tmp_path / "tables" / "table3_decomposition_smoke_claims.md").exists()
    _summarize(store, "table3_decomposition_smoke", "no-such-sweep", tmp_path)  # no parent: said, not raised
    assert capsys.readouterr().out == "(no parent run of sweep no-such-sweep to summarize)\n"


# Figures: every seed, the floors, the smoke mark ----------------------------------------------------


def test_figure_draws_every_seed_the_floors_and_marks_smoke() -> None:
    from analysis.figures import draw_figure, element_size_data

    records = []
    for size, values, floor in ((6, (0.40, 0.44), 0.10), (12, (0.50, 0.52), 0.12)):
        for seed, value in enumerate(values):
            config = {**SMOKE, "regions.method": "slic", "regions.region_size": size, "seed": seed}
            row = record(config, value)
            row["metrics.eval/baseline_random_linear_miou"] = floor
            records.append(row)
    data = element_size_data(runs_frame(records), "fig5_element_size_smoke")
    assert list(data["seeds"]) == ["40.0000;44.0000", "50.0000;52.0000"]
    np.testing.assert_allclose(data["random_init"], [10.0, 12.0])
    assert data["raw_colours"].isna().all()

    (ax,) = draw_figure(data, "fig5_element_size").axes
    assert ax.get_title() == "64px-resolution Synthetic (smoke)†"
    (dots,) = ax.collections[-1:]
    np.testing.assert_allclose(dots.get_offsets(), [[6, 40], [6, 44], [12, 50], [12, 52]])
    floors = {
        line.get_label(): line.get_xydata().tolist()
        for line in ax.get_lines()
        if line.get_linestyle() == "--"
    }
    assert floors == {"superpixel ↳ random init": [[6.0, 10.0], [12.0, 12.0]]}
