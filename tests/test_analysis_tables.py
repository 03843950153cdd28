"""Tables and figures regenerated from fixture runs logged to a temporary MLflow SQLite store.

The store holds (fractions in MLflow, percent in the tables):
- table3_decomposition, sweep ``sw1`` (Cityscapes, 256 px views): Super 10px seeds 0/1/2 = 0.30/0.32/0.34
  (seed 0 also has an older superseded run = 0.10), Grid 10px seeds 0/1 = 0.29/0.30 and seed 2 FAILED,
  FPN 1px seed 0 FAILED only, an extra Super 20px cell = 0.31; sweep ``smoke1``: smoke runs on synthetic data;
- table1_main: COCO low-res (2 seeds) and high-res (1 seed) with every evaluation family; sweep ``smoke1``:
  one smoke run on synthetic data;
- table2_resolution, table6_dk: a few cells; table5_hparams: a smoke one-change-at-a-time study;
- table4_domain: COCO -> Cityscapes seeds 0/1 = 0.34/0.36 mIoU, 0.86/0.87 aAcc (sweep ``sw1``), and, in
  sweep ``mix1``, a Cityscapes -> Cityscapes cell whose two runs differ in eval_protocol (must be refused);
- fig5_element_size, fig7_backbone (one backbone FAILED);
- fig6_random_init: per-step evaluations; Cityscapes low-res logs 400 train images on 2 ranks of 4 images
  (50 steps per epoch), high-res COCO logs no image count (plotted over steps).

A second store (``floors_uri``) holds runs that also log the floors (``eval.baselines=true``:
``eval/baseline_random_*``, ``eval/baseline_rgb_*``) for every table; see its fixture.

Set ``VICE_UPDATE_GOLDEN=1`` to rewrite the golden files after an intended change, then review the diff.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from analysis.cells import MixedCellError
from analysis.cli import main
from analysis.figures import draw_figure, figure_data, figure_table, plot_figure
from analysis.render import Stat
from analysis.runs import load_runs, pending_runs, select_latest_finished
from analysis.tables import (
    FLOOR_NOTE,
    FLOORS,
    build_table1,
    build_table2,
    build_table3,
    build_table4,
    build_table5,
    build_table6,
    floor_metric,
    render_experiment,
    resolve_experiment,
    write_experiment,
)
from vice.config import Config
from vice.evaluate.run import RANDOM_PREFIX, RGB_PREFIX
from vice.launch.tracking.params import flatten_config, param_text

GOLDEN = Path(__file__).parent / "golden" / "analysis"
T0 = 1_700_000_000_000
_clock = itertools.count()

CITY_LOW = {"data.name": "cityscapes", "data.root": "/data/cityscapes", "views.view_size": 256}
SMOKE = {"data.name": "synthetic", "views.view_size": 64, "views.num_views": 3}
COCO_LOW = {
    "data.name": "cocostuff",
    "data.root": "/data/coco",
    "views.view_size": 256,
    "model.backbone": "resnet18",
    "model.pretrained": "/weights/resnet18.pth",
}
COCO_HIGH = {
    **COCO_LOW,
    "views.view_size": 512,
    "model.backbone": "resnet50",
    "model.decoder": "deeplabv3plus",
    "model.pretrained": "/weights/resnet50.pth",
}


def family_metrics(values: dict[str, tuple[float, float]]) -> dict[str, float]:
    """``{"cluster27_hungarian": (miou, acc), ...}`` -> eval metric names."""
    out = {}
    for family, (miou, acc) in values.items():
        out[f"eval/{family}_miou"] = miou
        out[f"eval/{family}_acc"] = acc
    return out


def log_run(
    client: Any,
    experiment: str,
    config: dict[str, Any],
    metrics: dict[str, float],
    *,
    status: str = "FINISHED",
    sweep: str = "sw1",
    history: dict[int, float] | None = None,
    duration_s: float = 3600.0,
    tags: dict[str, str] | None = None,
) -> None:
    """Log one job run: full flattened config as params, the sweep tags, final metrics at step 1000."""
    from mlflow.entities import Metric, Param, RunTag

    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    params = flatten_config(Config())
    params.update({k: param_text(v) for k, v in config.items()})
    smoke = config.get("data.name") == "synthetic"
    run_key = "|".join(f"{k}={params[k]}" for k in sorted(config) if k != "data.root")
    all_tags = {
        "experiment": experiment,
        "sweep_id": "smoke1" if smoke else sweep,
        "run_key": run_key,
        "git_commit": "abc1234def" if not smoke else "fff0000",
        "smoke": "true" if smoke else "false",
        "eval_protocol": "full",
        "eval_dataset": str(config.get("eval.dataset") or config["data.name"]),
        **(tags or {}),
    }
    start = T0 + next(_clock) * 10_000_000
    run = client.create_run(experiment_id, start_time=start)
    values = [Metric(k, v, start, 1000) for k, v in metrics.items()]
    values += [Metric("eval/linear_miou", v, start, step) for step, v in (history or {}).items()]
    client.log_batch(
        run.info.run_id,
        metrics=values,
        params=[Param(k, v) for k, v in params.items()],
        tags=[RunTag(k, v) for k, v in all_tags.items()],
    )
    client.set_terminated(run.info.run_id, status, end_time=start + int(duration_s * 1000))


def linear(miou: float, acc: float | None = None) -> dict[str, float]:
    return {"eval/linear_miou": miou, **({"eval/linear_acc": acc} if acc is not None else {})}


def log_table3(client: Any) -> None:
    super10 = {**CITY_LOW, "regions.method": "slic", "regions.region_size": 10}
    grid10 = {**CITY_LOW, "regions.method": "grid", "regions.region_size": 10}
    pixel = {**CITY_LOW, "regions.method": "pixel", "views.mask_ratio": 0.0}
    super20 = {**CITY_LOW, "regions.method": "slic", "regions.region_size": 20}
    log_run(client, "table3_decomposition", {**super10, "seed": 0}, linear(0.10))
    for seed, value in enumerate((0.30, 0.32, 0.34)):
        log_run(
            client,
            "table3_decomposition",
            {**super10, "seed": seed},
            linear(value),
            duration_s=3600 + 120 * seed,
        )
    for seed, value in enumerate((0.29, 0.30)):
        log_run(client, "table3_decomposition", {**grid10, "seed": seed}, linear(value), duration_s=19860)
    log_run(client, "table3_decomposition", {**grid10, "seed": 2}, {}, status="FAILED")
    log_run(client, "table3_decomposition", {**pixel, "seed": 0}, {}, status="FAILED")
    log_run(client, "table3_decomposition", {**super20, "seed": 0}, linear(0.31), duration_s=7200)
    for method, values in (("slic", (0.40, 0.44)), ("grid", (0.35, 0.37)), ("pixel", (0.30,))):
        for seed, value in enumerate(values):
            config = {**SMOKE, "regions.method": method, "regions.region_size": 8, "seed": seed}
            log_run(client, "table3_decomposition", config, linear(value), duration_s=42)


def log_table1(client: Any) -> None:
    low = [
        {
            "cluster27_hungarian": (0.11, 0.30),
            "cluster27_majority": (0.12, 0.50),
            "cluster128_majority": (0.16, 0.52),
            "cluster256_majority": (0.18, 0.55),
            "linear": (0.25, 0.62),
        },
        {
            "cluster27_hungarian": (0.12, 0.32),
            "cluster27_majority": (0.12, 0.52),
            "cluster128_majority": (0.18, 0.54),
            "cluster256_majority": (0.18, 0.55),
            "linear": (0.26, 0.64),
        },
    ]
    for seed, values in enumerate(low):
        log_run(client, "table1_main", {**COCO_LOW, "seed": seed}, family_metrics(values))
    high = {
        "cluster27_hungarian": (0.13, 0.33),
        "cluster27_majority": (0.12, 0.49),
        "cluster128_majority": (0.19, 0.60),
        "cluster256_majority": (0.22, 0.65),
        "linear": (0.30, 0.70),
    }
    log_run(client, "table1_main", {**COCO_HIGH, "seed": 0}, family_metrics(high))
    smoke = family_metrics({"cluster27_hungarian": (0.20, 0.50), "linear": (0.30, 0.60)})
    log_run(client, "table1_main", {**SMOKE, "seed": 0}, smoke)


def log_small_tables(client: Any) -> None:
    city_low = {**CITY_LOW, "model.pretrained": "/weights/resnet18.pth"}
    families = family_metrics({"cluster27_hungarian": (0.20, 0.70), "cluster128_majority": (0.22, 0.80)})
    for seed, value in enumerate((0.31, 0.33)):
        log_run(client, "table2_resolution", {**city_low, "seed": seed}, {**families, **linear(value)})
    coco = {**COCO_HIGH, "model.embed_dim": 64, "swav.num_prototypes": 128}
    for seed, value in enumerate((0.27, 0.28)):
        log_run(client, "table6_dk", {**coco, "seed": seed}, linear(value))
    log_run(client, "table6_dk", {**coco, "model.embed_dim": 128, "seed": 0}, linear(0.29))
    base = {**SMOKE, "views.mask_ratio": 0.5, "swav.num_prototypes": 16, "model.embed_dim": 16}
    for seed, value in enumerate((0.20, 0.22)):
        log_run(client, "table5_hparams", {**base, "seed": seed}, linear(value))
    log_run(client, "table5_hparams", {**base, "views.mask_ratio": 0.25, "seed": 0}, linear(0.23))
    log_run(client, "table5_hparams", {**base, "model.embed_dim": 32, "seed": 0}, linear(0.19))
    log_run(client, "table5_hparams", {**base, "swav.num_prototypes": 32, "seed": 0}, {}, status="FAILED")


def log_table4(client: Any) -> None:
    coco_on_city = {**COCO_LOW, "eval.dataset": "cityscapes", "eval.root": "/data/cityscapes"}
    for seed, (miou, acc) in enumerate(((0.34, 0.86), (0.36, 0.87))):
        log_run(client, "table4_domain", {**coco_on_city, "seed": seed}, linear(miou, acc))
    for seed, protocol in enumerate(("full", "picie")):
        config = {**CITY_LOW, "seed": seed}
        log_run(
            client,
            "table4_domain",
            config,
            linear(0.30, 0.87),
            sweep="mix1",
            tags={"eval_protocol": protocol},
        )


def log_figures(client: Any) -> None:
    coco = {**COCO_HIGH}
    for method, size, values in (
        ("slic", 10, (0.28, 0.30)),
        ("slic", 20, (0.31, 0.31)),
        ("grid", 10, (0.25,)),
        ("grid", 20, (0.27, 0.29)),
    ):
        for seed, value in enumerate(values):
            config = {**coco, "regions.method": method, "regions.region_size": size, "seed": seed}
            log_run(client, "fig5_element_size", config, linear(value))
    city = {**CITY_LOW, "data.batch_size": 4}
    for seed, offset in enumerate((0.0, 0.02)):
        history = {100: 0.10 + offset, 200: 0.15 + offset}
        sizes = {"train/num_images": 400.0, "train/world_size": 2.0}  # 400 // (4 x 2) = 50 steps per epoch
        log_run(
            client,
            "fig6_random_init",
            {**city, "seed": seed},
            {**linear(0.20 + offset), **sizes},
            history=history,
        )
    coco_random = {**COCO_HIGH, "model.pretrained": None, "seed": 0}
    log_run(
        client,
        "fig6_random_init",
        coco_random,
        {**linear(0.08), "train/world_size": 1.0},  # no train/num_images: stays in steps
        history={50: 0.05},
    )
    city_high = {**CITY_LOW, "views.view_size": 512}
    for backbone, values in (("resnet18", (0.30, 0.32)), ("resnet50", (0.28,))):
        for seed, value in enumerate(values):
            log_run(
                client,
                "fig7_backbone",
                {**city_high, "model.backbone": backbone, "seed": seed},
                linear(value),
            )
    log_run(
        client, "fig7_backbone", {**city_high, "model.backbone": "resnet101", "seed": 0}, {}, status="FAILED"
    )


@pytest.fixture(scope="module")
def uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    from mlflow.tracking import MlflowClient

    tracking_uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"
    client = MlflowClient(tracking_uri=tracking_uri)
    log_table3(client)
    log_table1(client)
    log_small_tables(client)
    log_table4(client)
    log_figures(client)
    return tracking_uri


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("VICE_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"missing golden file {path}: run with VICE_UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text(encoding="utf-8"), f"{name} differs from its golden file"


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


# Tables ------------------------------------------------------------------------------------------


def test_table3_cells_bold_and_gap_footnotes(uri: str) -> None:
    table = build_table3(load_runs(uri, ["table3_decomposition"], sweep_id="sw1"), "table3_decomposition")
    low, high = table.sections
    assert low.title == "Low-resolution Cityscapes" and high.title == "High-resolution Cityscapes"
    assert low.columns == (
        "FPN 1px",
        "Masking",
        "Grid 10px",
        "Super 10px",
        "DLV3+",
        "FPN super 20px +mask 25%",
    )
    miou = dict(zip(low.columns, low.rows[0][1], strict=True))
    assert miou["Super 10px"].ours() == "32.00 ± 2.00 (3)" and miou["Super 10px"].bold
    assert miou["Grid 10px"].ours() == "29.50 ± 0.71 (2)" and not miou["Grid 10px"].bold
    assert miou["FPN super 20px +mask 25%"].ours() == "31.00 (1)"
    assert [miou[c].ours() for c in ("FPN 1px", "Masking", "DLV3+")] == ["—"] * 3
    assert miou["Super 10px"].delta() == "+0.45"  # paper 31.55
    time = dict(zip(low.columns, low.rows[1][1], strict=True))
    assert time["Super 10px"].ours() == "1h 2min (3)"  # (3600 + 3720 + 3840) / 3 s
    assert time["Grid 10px"].paper_str() == "5h 31min" and time["Grid 10px"].delta() == "+0s"
    assert all(s.ours() == "—" for s in high.rows[0][1])
    overrides = (
        "data.name=cityscapes views.view_size=256 regions.method={} {}views.mask_ratio={} model.decoder=fpn"
    )
    assert table.footnotes[:3] == (
        "missing: Low-resolution Cityscapes / FPN 1px: run table3_decomposition with "
        f"`{overrides.format('pixel', '', '0.0')} seed=0`",
        "missing: Low-resolution Cityscapes / Masking: run table3_decomposition with "
        f"`{overrides.format('pixel', '', '0.25')}`",
        "incomplete (2 finished): Low-resolution Cityscapes / Grid 10px: run table3_decomposition with "
        f"`{overrides.format('grid', 'regions.region_size=10 ', '0.25')} seed=2`",
    )


@pytest.mark.parametrize("fmt", ["markdown", "latex", "csv"])
def test_table3_golden_every_format(uri: str, fmt: str) -> None:
    text = render_experiment(uri, "table3_decomposition", fmt=fmt)
    check_golden(f"table3_decomposition.{ {'markdown': 'md', 'latex': 'tex', 'csv': 'csv'}[fmt] }", text)


def test_table3_golden_paper_beside_ours(uri: str) -> None:
    text = render_experiment(uri, "table3_decomposition", sweep_id="sw1", compare=True)
    check_golden("table3_decomposition_compare.md", text)


def test_smoke_sweep_table_is_labelled_synthetic_and_has_no_paper_cells(uri: str) -> None:
    text = render_experiment(uri, "table3_decomposition", sweep_id="smoke1")
    check_golden("table3_decomposition_smoke.md", text)
    assert "64px-resolution Synthetic (smoke)" in text
    assert "42.00 ± 2.83 (2)†" in text and "**42.00 ± 2.83 (2)†**" in text
    assert "*Low-resolution Cityscapes*" not in text and "missing" not in text


VICE_FAMILIES = ("C 27◇", "C 27⋆", "C 128⋆", "C 256⋆", "Linear")
PICIE_EVALS = ("C 27", "C 27◇", "C 27⋆", "C 128⋆", "C 256⋆", "Linear")
OTHERS_BEFORE = [(m, "C 27") for m in ("ResNet50", "MoCoV2", "DINO*", "IIC")] + [
    ("PiCIE", e) for e in PICIE_EVALS
]
OTHERS_AFTER = [("PiCIE+H", "C 27+100")]
STEGO = [("STEGO*", "C 27"), ("STEGO*", "Linear")]


def test_table1_sub_rows_markers_and_best_cnn_bold(uri: str) -> None:
    table = build_table1(load_runs(uri, ["table1_main"], sweep_id="sw1"))
    coco, city = table.sections
    rows = {labels: values for labels, values in coco.rows}
    assert list(rows) == [
        *OTHERS_BEFORE,
        *OTHERS_AFTER,
        *[("ViCE (low-res)", e) for e in VICE_FAMILIES],
        *[("ViCE (high-res)", e) for e in VICE_FAMILIES],
        *STEGO,
    ]
    assert rows[("ViCE (low-res)", "C 27◇")][0].ours() == "11.50 ± 0.71 (2)"
    assert rows[("ViCE (low-res)", "C 27◇")][1].ours() == "31.00 ± 1.41 (2)"
    assert rows[("ViCE (low-res)", "C 256⋆")][0].paper == 17.98
    bold = [(labels, i) for labels, values in coco.rows for i, v in enumerate(values) if v.bold]
    assert bold == [
        (("ViCE (high-res)", "C 256⋆"), 0),
        (("ViCE (high-res)", "C 256⋆"), 1),
        (("ViCE (high-res)", "Linear"), 0),
        (("ViCE (high-res)", "Linear"), 1),
    ]
    assert [labels for labels, _ in city.rows] == [
        *OTHERS_BEFORE,
        *OTHERS_AFTER,
        *[("ViCE (low-res)", e) for e in VICE_FAMILIES],
        ("ViCE (no pretrain)", "Linear"),
        ("ViCE (high-res)", "C 256⋆"),
        ("ViCE (high-res)", "Linear"),
        *STEGO,
    ]
    assert all(v.ours() == "—" for _, values in city.rows for v in values)
    check_golden("table1_main.md", render_experiment(uri, "table1_main", sweep_id="sw1"))


def test_table1_paper_only_rows_show_the_papers_numbers_and_never_bold(uri: str) -> None:
    table = build_table1(load_runs(uri, ["table1_main"], sweep_id="sw1"))
    coco, city = table.sections
    others = {labels: values for labels, values in coco.rows if not labels[0].startswith("ViCE")}
    assert all(v.ours() == "—" and not v.bold for values in others.values() for v in values)
    assert [v.paper for v in others[("PiCIE", "C 256⋆")]] == [12.42, 66.02]
    assert [v.paper for v in others[("PiCIE+H", "C 27+100")]] == [14.4, 50.0]
    assert [v.paper for v in others[("STEGO*", "Linear")]] == [41.0, 76.1]  # ViT: above ours, not bold
    city_rows = dict(city.rows)
    assert [v.paper_str() for v in city_rows[("IIC", "C 27")]] == ["6.35", "47.88"]
    assert [v.paper_str() for v in city_rows[("DINO*", "C 27")]] == ["n/a", "n/a"]  # printed '-'
    assert table.footnotes[-1] == (
        "ResNet50, MoCoV2, DINO*, IIC, PiCIE, PiCIE+H, STEGO*: other methods as the paper reports them;"
        " this repo does not run them, so ours is —. * marks ViT-based models, which the bold leaves out"
        " (it compares CNN results)."
    )
    compare = render_experiment(uri, "table1_main", sweep_id="sw1", compare=True)
    assert "| STEGO*          | C 27     |      28.20 |                — |       |      56.90 |" in compare
    assert "|                 | Linear   |      41.00 |                — |       |      76.10 |" in compare
    check_golden("table1_main_compare.md", compare)


def test_table1_of_a_smoke_sweep_has_no_paper_rows(uri: str) -> None:
    table = build_table1(load_runs(uri, ["table1_main"], sweep_id="smoke1"))
    (section,) = table.sections
    assert section.title == "Synthetic (smoke)"
    model = "ViCE (64px-res, RN18, FPN, no pretrain)"
    assert [(labels, [v.ours() for v in values]) for labels, values in section.rows] == [
        ((model, "C 27◇"), ["20.00 (1)†", "50.00 (1)†"]),
        ((model, "Linear"), ["30.00 (1)†", "60.00 (1)†"]),
    ]
    assert not any("other methods" in note for note in table.footnotes)


def test_table2_table6_golden(uri: str) -> None:
    table2 = render_experiment(uri, "table2_resolution", compare=True)
    check_golden("table2_resolution_compare.md", table2)
    assert "22.00 ± 0.00 (2)" in table2 and "C 128⋆" in table2  # best cluster: C 128⋆ beats C 27◇ (20.00)
    table6 = render_experiment(uri, "table6_dk")
    check_golden("table6_dk.md", table6)
    assert "**29.00 (1)**" in table6 and "27.50 ± 0.71 (2)" in table6


def test_table5_baseline_and_deltas_from_a_smoke_study(uri: str) -> None:
    table = build_table5(load_runs(uri, ["table5_hparams"]))
    (section,) = table.sections
    rows = [(labels[0], values[0].ours(), values[1]) for labels, values in section.rows]
    assert rows == [
        ("baseline", "21.00 ± 1.41 (2)†", ""),
        ("mask coverage 0.5 → 0.25", "23.00 (1)†", "+2.00 (+9.5%)"),
        ("D 16 → 32", "19.00 (1)†", "-2.00 (-9.5%)"),
        ("K 16 → 32", "—", ""),
    ]
    assert section.rows[1][1][0].bold
    check_golden("table5_hparams.md", render_experiment(uri, "table5_hparams"))


def test_table4_domain_cell_beside_the_paper(uri: str) -> None:
    table = build_table4(load_runs(uri, ["table4_domain"], sweep_id="sw1"))
    (section,) = table.sections
    rows = {labels: values for labels, values in section.rows}
    assert list(rows) == [("Cityscapes", "Cityscapes"), ("COCO", "Cityscapes")]
    miou, acc = rows[("COCO", "Cityscapes")]
    assert (miou.ours(), miou.paper, miou.delta()) == ("35.00 ± 1.41 (2)", 34.14, "+0.86")
    assert (acc.ours(), acc.paper, acc.delta()) == ("86.50 ± 0.71 (2)", 86.1, "+0.40")
    assert [v.ours() for v in rows[("Cityscapes", "Cityscapes")]] == ["—", "—"]
    assert table.footnotes == (
        "missing: Cityscapes → Cityscapes: run table4_domain with `data.name=cityscapes eval.dataset=cityscapes`",
    )
    check_golden(
        "table4_domain_compare.md", render_experiment(uri, "table4_domain", sweep_id="sw1", compare=True)
    )


def test_mixed_protocol_cell_is_refused(uri: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(MixedCellError, match=r"eval_protocol = \['full', 'picie'\]"):
        render_experiment(uri, "table4_domain")
    assert main(["--tracking-uri", uri, "--experiment", "table4_domain", "--out", "/nonexistent"]) == 1
    assert "mix eval_protocol" in capsys.readouterr().err


def test_same_runs_give_byte_identical_files(uri: str, tmp_path: Path) -> None:
    first = write_experiment(uri, "table3_decomposition", tmp_path / "a")
    second = write_experiment(uri, "table3_decomposition", tmp_path / "b")
    for a, b in zip(first.files, second.files, strict=True):
        if a.suffix != ".png":
            assert a.read_bytes() == b.read_bytes(), a.name
    assert [p.name for p in first.files] == [
        "table3_decomposition.md",
        "table3_decomposition.tex",
        "table3_decomposition.csv",
        "table3_decomposition.png",
        "table3_decomposition.pdf",
        "table3_decomposition_plot.csv",
    ]


def test_experiment_names_resolve_to_paper_experiments() -> None:
    assert resolve_experiment("table3_decomposition_smoke") == "table3_decomposition"
    with pytest.raises(KeyError, match="names none of the paper experiments"):
        resolve_experiment("exp138")


# Floors (eval.baselines) --------------------------------------------------------------------------


def floors(prefix: str, **values: float) -> dict[str, float]:
    """``floors(RANDOM_PREFIX, linear_miou=0.1)`` -> ``{"eval/baseline_random_linear_miou": 0.1}``."""
    return {f"eval/{prefix}{name}": value for name, value in values.items()}


@pytest.fixture(scope="module")
def floors_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A store whose runs log the floors beside the model (``eval.baselines=true``), one experiment per table.

    Random init and raw colours log every family they are asked for, except where a run predates the
    raw-colour linear probe (Table 2) or logs no floor at all (Table 3's pixel cell, Table 5's D 16 -> 32,
    Table 6's (128, 128)): those floors are blank, and a floor no cell logs has no row (raw colours in
    Tables 5 and 6). Table 1's raw-colour C 27◇ accuracy (70%) beats every model accuracy: still not bold.
    """
    from mlflow.tracking import MlflowClient

    tracking_uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow_floors')}/mlflow.db"
    client = MlflowClient(tracking_uri=tracking_uri)
    for seed, up in enumerate((0.0, 0.02)):
        model = {
            "cluster27_hungarian": (0.11 + up, 0.30 + up),
            "cluster128_majority": (0.16 + up, 0.52 + up),
            "linear": (0.25 + up, 0.62 + up),
        }
        random = floors(
            RANDOM_PREFIX,
            cluster27_hungarian_miou=0.04 + up,
            cluster27_hungarian_acc=0.20 + up,
            cluster128_majority_miou=0.07 + up,
            cluster128_majority_acc=0.40 + up,
            linear_miou=0.08 + up,
            linear_acc=0.45 + up,
        )
        rgb = floors(
            RGB_PREFIX,
            cluster27_hungarian_miou=0.05,
            cluster27_hungarian_acc=0.70,
            cluster128_majority_miou=0.06 + up,
            cluster128_majority_acc=0.72 + up,
            linear_miou=0.03,
            linear_acc=0.50,
        )
        log_run(client, "table1_main", {**COCO_LOW, "seed": seed}, {**family_metrics(model), **random, **rgb})
    city_low = {**CITY_LOW, "model.pretrained": "/weights/resnet18.pth"}
    model = family_metrics({"cluster27_hungarian": (0.20, 0.70), "cluster128_majority": (0.22, 0.80)})
    rgb = floors(RGB_PREFIX, cluster27_hungarian_miou=0.09, cluster128_majority_miou=0.07)  # no linear
    for seed, up in enumerate((0.0, 0.02)):
        random = floors(
            RANDOM_PREFIX, cluster27_hungarian_miou=0.05, cluster128_majority_miou=0.06, linear_miou=0.10 + up
        )
        metrics = {**model, **linear(0.31 + up), **random, **rgb}
        log_run(client, "table2_resolution", {**city_low, "seed": seed}, metrics)
    for method, values, random_values in (
        ("pixel", (0.30,), ()),
        ("grid", (0.35, 0.37), (0.21, 0.21)),
        ("slic", (0.40, 0.44), (0.18, 0.20)),
    ):
        for seed, value in enumerate(values):
            config = {**SMOKE, "regions.method": method, "regions.region_size": 8, "seed": seed}
            metrics = linear(value)
            if random_values:
                metrics |= floors(RANDOM_PREFIX, linear_miou=random_values[seed])
                metrics |= floors(RGB_PREFIX, cluster7_majority_miou=0.5, linear_miou=0.12)
            log_run(client, "table3_decomposition", config, metrics, duration_s=42)
    coco_on_city = {**COCO_LOW, "eval.dataset": "cityscapes", "eval.root": "/data/cityscapes"}
    for seed, (miou, acc) in enumerate(((0.34, 0.86), (0.36, 0.87))):
        random = floors(RANDOM_PREFIX, linear_miou=miou - 0.24, linear_acc=acc - 0.36)
        rgb = floors(RGB_PREFIX, linear_miou=0.07, linear_acc=0.55)
        log_run(
            client, "table4_domain", {**coco_on_city, "seed": seed}, {**linear(miou, acc), **random, **rgb}
        )
    base = {**SMOKE, "views.mask_ratio": 0.5, "swav.num_prototypes": 16, "model.embed_dim": 16}
    for seed, value in enumerate((0.20, 0.22)):
        metrics = {**linear(value), **floors(RANDOM_PREFIX, linear_miou=0.10)}
        log_run(client, "table5_hparams", {**base, "seed": seed}, metrics)
    metrics = {**linear(0.23), **floors(RANDOM_PREFIX, linear_miou=0.11)}
    log_run(client, "table5_hparams", {**base, "views.mask_ratio": 0.25, "seed": 0}, metrics)
    log_run(client, "table5_hparams", {**base, "model.embed_dim": 32, "seed": 0}, linear(0.19))
    coco = {**COCO_HIGH, "model.embed_dim": 64, "swav.num_prototypes": 128}
    for seed, (value, random_value) in enumerate(((0.27, 0.05), (0.28, 0.06))):
        metrics = {**linear(value), **floors(RANDOM_PREFIX, linear_miou=random_value)}
        log_run(client, "table6_dk", {**coco, "seed": seed}, metrics)
    log_run(client, "table6_dk", {**coco, "model.embed_dim": 128, "seed": 0}, linear(0.29))
    return tracking_uri


def test_floor_prefixes_are_the_evaluations() -> None:
    assert [prefix for _, prefix in FLOORS] == [RANDOM_PREFIX, RGB_PREFIX]
    assert (
        floor_metric("eval/cluster27_hungarian_miou", RGB_PREFIX)
        == "eval/baseline_rgb_cluster27_hungarian_miou"
    )


def ours(values: tuple[Any, ...]) -> list[str]:
    """Each value as printed: a Stat's ours (bold marked ``**``), a text value as is."""
    return [(f"**{v.ours()}**" if v.bold else v.ours()) if isinstance(v, Stat) else v for v in values]


def test_table1_floors_follow_each_model_per_family_and_are_never_bold(floors_uri: str) -> None:
    table = build_table1(load_runs(floors_uri, ["table1_main"]))
    coco = dict(table.sections[0].rows)
    assert [labels for labels in coco if "ViCE (low-res)" in labels or labels[0].startswith("↳")] == [
        *[("ViCE (low-res)", e) for e in VICE_FAMILIES],
        ("↳ random init", "C 27◇"),
        ("↳ random init", "C 128⋆"),
        ("↳ random init", "Linear"),
        ("↳ raw colours", "C 27◇"),
        ("↳ raw colours", "C 128⋆"),
        ("↳ raw colours", "Linear"),
    ]
    assert ours(coco[("ViCE (low-res)", "C 128⋆")]) == ["**17.00 ± 1.41 (2)**", "**53.00 ± 1.41 (2)**"]
    assert ours(coco[("↳ random init", "C 27◇")]) == ["5.00 ± 1.41 (2)", "21.00 ± 1.41 (2)"]
    assert ours(coco[("↳ random init", "Linear")]) == ["9.00 ± 1.41 (2)", "46.00 ± 1.41 (2)"]
    assert ours(coco[("↳ raw colours", "C 27◇")]) == ["5.00 ± 0.00 (2)", "70.00 ± 0.00 (2)"]  # above 53.00
    assert ours(coco[("↳ raw colours", "Linear")]) == ["3.00 ± 0.00 (2)", "50.00 ± 0.00 (2)"]
    assert [(v.paper_str(), v.delta()) for v in coco[("↳ random init", "Linear")]] == [("", "")] * 2
    assert table.footnotes[-1] == FLOOR_NOTE
    check_golden("table1_main_floors_compare.md", render_experiment(floors_uri, "table1_main", compare=True))


def test_table2_floors_use_the_rows_cluster_evaluation(floors_uri: str) -> None:
    table = build_table2(load_runs(floors_uri, ["table2_resolution"]))
    (section,) = table.sections
    rows = [(labels, ours(values)) for labels, values in section.rows if labels[0] == "Cityscapes"]
    assert rows[:3] == [
        (("Cityscapes", "Low", "RN18, FPN"), ["22.00 ± 0.00 (2)", "32.00 ± 1.41 (2)", "C 128⋆"]),
        (("Cityscapes", "Low", "↳ random init"), ["6.00 ± 0.00 (2)", "11.00 ± 1.41 (2)", ""]),
        (
            ("Cityscapes", "Low", "↳ raw colours"),
            ["7.00 ± 0.00 (2)", "", ""],
        ),  # C 128⋆, not the better C 27◇; no probe logged
    ]
    check_golden("table2_resolution_floors.md", render_experiment(floors_uri, "table2_resolution"))


@pytest.mark.parametrize("fmt", ["markdown", "latex", "csv"])
def test_table3_floor_row_under_the_miou_row(floors_uri: str, fmt: str) -> None:
    table = build_table3(load_runs(floors_uri, ["table3_decomposition"]))
    (section,) = table.sections
    assert [(labels, ours(values)) for labels, values in section.rows[:2]] == [
        (("mIoU",), ["30.00 (1)†", "36.00 ± 1.41 (2)†", "**42.00 ± 2.83 (2)†**"]),
        (("↳ random init",), ["", "21.00 ± 0.00 (2)†", "19.00 ± 1.41 (2)†"]),
    ]
    assert [(labels, ours(values)) for labels, values in section.rows[2:]] == [
        (("↳ raw colours",), ["", "12.00 ± 0.00 (2)†", "12.00 ± 0.00 (2)†"]),
        (("Time",), ["42s (1)†", "42s (2)†", "42s (2)†"]),
    ]
    text = render_experiment(floors_uri, "table3_decomposition", fmt=fmt)
    check_golden(
        f"table3_decomposition_floors.{ {'markdown': 'md', 'latex': 'tex', 'csv': 'csv'}[fmt] }", text
    )


def test_table4_floor_is_named_in_the_training_domain_column(floors_uri: str) -> None:
    table = build_table4(load_runs(floors_uri, ["table4_domain"]))
    (section,) = table.sections
    assert [(labels, ours(values)) for labels, values in section.rows] == [
        (("Cityscapes", "Cityscapes"), ["—", "—"]),
        (("COCO", "Cityscapes"), ["35.00 ± 1.41 (2)", "86.50 ± 0.71 (2)"]),  # alone: a floor never competes
        (("↳ random init", "Cityscapes"), ["11.00 ± 1.41 (2)", "50.50 ± 0.71 (2)"]),
        (("↳ raw colours", "Cityscapes"), ["7.00 ± 0.00 (2)", "55.00 ± 0.00 (2)"]),
    ]
    check_golden(
        "table4_domain_floors_compare.md", render_experiment(floors_uri, "table4_domain", compare=True)
    )


def test_table5_floors_follow_their_row_and_keep_the_delta_order(floors_uri: str) -> None:
    table = build_table5(load_runs(floors_uri, ["table5_hparams"]))
    (section,) = table.sections
    assert [(labels[0], ours(values)) for labels, values in section.rows] == [
        ("baseline", ["21.00 ± 1.41 (2)†", ""]),
        ("↳ random init", ["10.00 ± 0.00 (2)†", ""]),
        ("mask coverage 0.5 → 0.25", ["**23.00 (1)†**", "+2.00 (+9.5%)"]),
        ("↳ random init", ["11.00 (1)†", ""]),
        ("D 16 → 32", ["19.00 (1)†", "-2.00 (-9.5%)"]),
    ]
    check_golden("table5_hparams_floors.md", render_experiment(floors_uri, "table5_hparams"))


def test_table6_floor_row_blank_where_a_cell_logs_none(floors_uri: str) -> None:
    table = build_table6(load_runs(floors_uri, ["table6_dk"]))
    (section,) = table.sections
    miou, floor = (dict(zip(section.columns, values, strict=True)) for _, values in section.rows)
    assert [labels for labels, _ in section.rows] == [("mIoU",), ("↳ random init",)]
    assert (miou["(64, 128)"].ours(), floor["(64, 128)"].ours()) == ("27.50 ± 0.71 (2)", "5.50 ± 0.71 (2)")
    assert miou["(128, 128)"].bold and floor["(128, 128)"] == ""
    check_golden("table6_dk_floors.md", render_experiment(floors_uri, "table6_dk"))


def test_floors_are_not_plotted_and_files_name_them(floors_uri: str, tmp_path: Path) -> None:
    outputs = write_experiment(floors_uri, "table3_decomposition", tmp_path)
    plotted = pd.read_csv(tmp_path / "table3_decomposition_plot.csv")
    assert list(plotted["series"]) == [
        "FPN 1px +mask 25%",
        "FPN grid 8px +mask 25%",
        "FPN super 8px +mask 25%",
    ]
    np.testing.assert_allclose(plotted["mean"], [30.0, 36.0, 42.0])
    assert "| ↳ random init |" in outputs.markdown


# Figures -----------------------------------------------------------------------------------------


def errorbar_series(ax: Any) -> dict[str, tuple[list[list[float]], list[float]]]:
    """What an axes plots: ``{label: ([[x, mean], ...], [std, ...])}`` from its error-bar containers."""
    series = {}
    for container in ax.containers:
        line, _, (bars,) = container.lines
        stds = [(top[1] - bottom[1]) / 2.0 for bottom, top in bars.get_segments()]
        series[container.get_label()] = (line.get_xydata().tolist(), stds)
    return series


def test_fig5_superpixel_and_grid_series(uri: str, tmp_path: Path) -> None:
    data = figure_data(load_runs(uri, ["fig5_element_size"]), "fig5_element_size")
    assert list(data["series"]) == ["grid", "grid", "superpixel", "superpixel"]
    assert list(data["x"]) == [10.0, 20.0, 10.0, 20.0]
    np.testing.assert_allclose(data["mean"], [25.0, 28.0, 29.0, 31.0])
    np.testing.assert_allclose(data["std"], [0.0, np.sqrt(2.0), np.sqrt(2.0), 0.0])
    assert list(data["n"]) == [1, 2, 2, 2]
    assert set(data["panel"]) == {"High-resolution COCO"}

    (ax,) = draw_figure(data, "fig5_element_size").axes
    assert (ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) == (
        "High-resolution COCO",
        "base element size (px)",
        "mIoU (%)",
    )
    plotted = errorbar_series(ax)
    assert list(plotted) == ["grid", "superpixel"]
    np.testing.assert_allclose(plotted["grid"][0], [[10.0, 25.0], [20.0, 28.0]])
    np.testing.assert_allclose(plotted["grid"][1], [0.0, np.sqrt(2.0)])
    np.testing.assert_allclose(plotted["superpixel"][0], [[10.0, 29.0], [20.0, 31.0]])
    np.testing.assert_allclose(plotted["superpixel"][1], [np.sqrt(2.0), 0.0])
    png, pdf, _ = plot_figure(data, "fig5_element_size", tmp_path / "fig5")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pdf.read_bytes()[:5] == b"%PDF-"


def test_fig6_mean_over_seeds_per_epoch_and_steps_where_a_panel_cannot_convert(uri: str) -> None:
    data = figure_data(load_runs(uri, ["fig6_random_init"]), "fig6_random_init", uri)
    coco, city = (
        data[data["panel"] == "High-resolution COCO"],
        data[data["panel"] == "Low-resolution Cityscapes"],
    )
    assert list(coco["series"]) == ["RN50, DLV3+, random init"] * 2
    assert list(coco["x"]) == [50.0, 1000.0] and set(coco["xlabel"]) == {"step"}
    np.testing.assert_allclose(coco["mean"], [5.0, 8.0])
    assert list(city["series"]) == ["RN18, FPN, random init"] * 3
    assert list(city["x"]) == [2.0, 4.0, 20.0] and set(city["xlabel"]) == {"epoch"}  # steps 100, 200, 1000
    np.testing.assert_allclose(city["mean"], [11.0, 16.0, 21.0])
    assert list(city["n"]) == [2, 2, 2]

    left, right = draw_figure(data, "fig6_random_init").axes
    assert (left.get_xlabel(), right.get_xlabel()) == ("step", "epoch")
    np.testing.assert_allclose(
        errorbar_series(left)["RN50, DLV3+, random init"][0], [[50.0, 5.0], [1000.0, 8.0]]
    )
    city_line, city_std = errorbar_series(right)["RN18, FPN, random init"]
    np.testing.assert_allclose(city_line, [[2.0, 11.0], [4.0, 16.0], [20.0, 21.0]])
    np.testing.assert_allclose(city_std, [np.sqrt(2.0)] * 3)
    table = figure_table(data, "fig6_random_init", "fig6_random_init")
    assert [section.labels for section in table.sections] == [("Series", "step"), ("Series", "epoch")]


def test_fig7_depths_and_a_missing_backbone(uri: str, tmp_path: Path) -> None:
    out = tmp_path / "figs"
    assert main(["--tracking-uri", uri, "--experiment", "fig7_backbone", "--out", str(out)]) == 0
    data = pd.read_csv(out / "fig7_backbone_plot.csv")
    assert list(data["x"]) == [18.0, 50.0, 101.0]
    np.testing.assert_allclose(data["mean"], [31.0, 28.0, np.nan])
    assert list(data["n"]) == [2, 1, 0]
    assert data["note"].fillna("").iloc[2] == (
        "missing: High-resolution Cityscapes / resnet101: run fig7_backbone with "
        "`data.name=cityscapes views.view_size=512 model.backbone=resnet101 seed=0`"
    )
    assert (out / "fig7_backbone.png").stat().st_size > 0 and (out / "fig7_backbone.pdf").stat().st_size > 0
