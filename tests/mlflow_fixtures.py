"""Fixture runs logged to a temporary MLflow SQLite store, and the golden-file check (tests/analysis).

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

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from vice.config import Config
from vice.launch.tracking.params import flatten_config, param_text

GOLDEN = Path(__file__).parent / "golden" / "analysis"
#: The evaluation families a ViCE row of Table 1 shows.
VICE_FAMILIES = ("C 27◇", "C 27⋆", "C 128⋆", "C 256⋆", "Linear")
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
        random_init = {
            "eval/baseline_random_linear_miou": 0.05 + offset
        }  # the floor, as eval.baselines logs it
        log_run(
            client,
            "fig6_random_init",
            {**city, "seed": seed},
            {**linear(0.20 + offset), **sizes, **random_init},
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


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("VICE_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"missing golden file {path}: run with VICE_UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text(encoding="utf-8"), f"{name} differs from its golden file"


def floors(prefix: str, **values: float) -> dict[str, float]:
    """``floors(RANDOM_PREFIX, linear_miou=0.1)`` -> ``{"eval/baseline_random_linear_miou": 0.1}``."""
    return {f"eval/{prefix}{name}": value for name, value in values.items()}
