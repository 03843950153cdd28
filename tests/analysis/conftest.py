"""The two fixture stores of the analysis tests (see tests/mlflow_fixtures.py)."""

from __future__ import annotations

import pytest
from mlflow_fixtures import (
    CITY_LOW,
    COCO_HIGH,
    COCO_LOW,
    SMOKE,
    family_metrics,
    floors,
    linear,
    log_figures,
    log_run,
    log_small_tables,
    log_table1,
    log_table3,
    log_table4,
)

from vice.evaluate.run import RANDOM_PREFIX, RGB_PREFIX


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
