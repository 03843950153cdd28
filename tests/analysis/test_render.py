"""Pure parts of the analysis: param casting, cells, statistics, rendering and the paper transcription."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis.cells import (
    MixedCellError,
    Summary,
    axis_values,
    check_cell,
    overrides,
    sort_key,
    summarize,
)
from analysis.figures import run_steps_per_epoch, steps_per_epoch, to_epochs
from analysis.paper import load_paper, paper_rows, paper_timing, parse_duration
from analysis.render import (
    Section,
    Stat,
    Table,
    best_marks,
    format_duration,
    latex_escape,
    to_csv,
    to_markdown,
)
from analysis.runs import cast_param, runs_frame
from analysis.tables import (
    TABLE1_AXES,
    TABLE2_AXES,
    TABLE3_AXES,
    TABLE4_AXES,
    TABLE5_AXES,
    TABLE6_AXES,
    baseline_index,
    change_label,
    decomposition_label,
    family_label,
    family_order,
    paper_only_rows,
)
from vice.config import Config
from vice.launch.tracking.params import flatten_config


def test_cast_param_reads_back_every_logged_config_value() -> None:
    config = Config()
    flat = flatten_config(config)
    expected = {
        "views.view_size": 256,
        "views.mask_ratio": 0.25,
        "views.resize_range": (0.5, 2.0),
        "eval.num_clusters": (27, 128, 256),
        "model.pretrained": None,
        "model.sync_bn": True,
        "regions.ruler": 10.0,
        "optim.weight_decay": 1e-6,
        "model.backbone": "resnet18",
    }
    assert {k: cast_param(flat[k]) for k in expected} == expected
    assert cast_param("True") is True and cast_param("null") is None and cast_param("[a") == "[a"


def test_runs_frame_keeps_param_types_and_sorts_by_start() -> None:
    frame = runs_frame(
        [
            {"run_id": "b", "start_time": 2, "params.seed": 1, "metrics.eval/linear_miou": 0.5},
            {"run_id": "a", "start_time": 1, "params.seed": None, "params.views.view_size": 256},
        ]
    )
    assert list(frame["run_id"]) == ["a", "b"]
    assert list(frame["params.seed"]) == [None, 1] and frame["params.views.view_size"].iloc[0] == 256
    assert (
        math.isnan(frame["metrics.eval/linear_miou"].iloc[0])
        and frame["metrics.eval/linear_miou"].iloc[1] == 0.5
    )


def _runs(**columns: list[object]) -> pd.DataFrame:
    size = len(next(iter(columns.values())))
    base = {
        "run_id": [f"r{i}" for i in range(size)],
        "start_time": list(range(size)),
        "end_time": [None] * size,
    }
    return pd.DataFrame({**base, **{k: pd.Series(v, dtype=object) for k, v in columns.items()}})


def test_derived_axes() -> None:
    runs = _runs(
        **{
            "params.model.pretrained": ["/w/r18.pth", None],
            "params.regions.method": ["pixel", "grid"],
            "params.regions.region_size": [20, 10],
            "params.eval.dataset": [None, "cityscapes"],
            "params.data.name": ["cocostuff", "cocostuff"],
            "tags.eval_dataset": ["cocostuff", None],
        }
    )
    assert list(axis_values(runs, "pretrained")) == [True, False]
    assert list(axis_values(runs, "element_size")) == [1, 10]
    assert list(axis_values(runs, "eval_dataset")) == ["cocostuff", "cityscapes"]
    assert overrides(("regions.method", "element_size", "pretrained"), ("pixel", 1, False)) == [
        "regions.method=pixel",
        "model.pretrained=null",
    ]


def test_check_cell_allows_seeds_and_paths_but_refuses_config_and_protocol_mixes() -> None:
    same = {"params.seed": [0, 1], "params.data.root": ["/a", "/b"], "tags.eval_protocol": ["full", "full"]}
    check_cell(_runs(**same), ("data.name",), "cell")
    with pytest.raises(MixedCellError, match=r"runs mix config train.max_steps = \['100', '200'\]"):
        check_cell(_runs(**same, **{"params.train.max_steps": [100, 200]}), ("data.name",), "cell")
    with pytest.raises(MixedCellError, match=r"eval_short_side = \['320', '<unset>'\]"):
        check_cell(_runs(**same, **{"tags.eval_short_side": ["320", None]}), ("data.name",), "cell")
    check_cell(_runs(**same, **{"params.train.max_steps": [100, 200]}), ("train.max_steps",), "an axis")


def test_summarize_mean_sample_std_and_count() -> None:
    assert summarize([0.30, 0.32, 0.34, float("nan")]) == pytest.approx(Summary(32.0, 2.0, 3))
    assert summarize([0.25]) == Summary(25.0, 0.0, 1)
    assert summarize([float("nan")]) is None
    assert summarize([3600.0, 3720.0], scale=1.0) == pytest.approx(Summary(3660.0, float(np.sqrt(7200.0)), 2))


def test_sort_key_follows_the_paper_vocabulary_then_numbers() -> None:
    assert sorted(["slic", "pixel", "zeta", "grid"], key=lambda v: sort_key([v])) == [
        "pixel",
        "grid",
        "slic",
        "zeta",
    ]
    assert sorted(["resnet101", "resnet18", "resnet50"], key=lambda v: sort_key([v])) == [
        "resnet18",
        "resnet50",
        "resnet101",
    ]
    assert sorted([512, None, 64, 256], key=lambda v: sort_key([v])) == [None, 64, 256, 512]


def test_durations_and_best_marks() -> None:
    assert parse_duration("34h 4min") == 122640.0
    assert parse_duration("92h 20min (est.)") == 332400.0
    with pytest.raises(ValueError, match="cannot read a duration"):
        parse_duration("soon")
    assert [format_duration(s) for s in (19860.0, 720.0, 42.0)] == ["5h 31min", "12min", "42s"]
    assert best_marks([31.554, 31.551, None]) == [True, True, False]
    assert best_marks([31.0, None]) == [False, False]


def test_evaluation_families_are_ordered_and_marked_like_the_paper() -> None:
    families = [
        "linear",
        "cluster256_majority",
        "cluster27_majority",
        "cluster27_hungarian",
        "cluster128_majority",
    ]
    ordered = sorted(families, key=family_order)
    assert [family_label(f) for f in ordered] == ["C 27◇", "C 27⋆", "C 128⋆", "C 256⋆", "Linear"]


def test_markdown_blanks_repeated_labels_bolds_and_compares() -> None:
    table = Table(
        "t",
        "Table X: demo",
        (
            Section(
                "COCO",
                ("Model", "Eval"),
                ("mIoU",),
                (
                    (("ViCE", "C 27◇"), (Stat(Summary(11.5, 0.7071, 2), paper=11.40),)),
                    (("ViCE", "Linear"), (Stat(Summary(25.5, 0.0, 1), paper=25.49, bold=True, smoke=True),)),
                    (("Other", "Linear"), (Stat(None, paper=None),)),
                ),
            ),
        ),
        ("note",),
    )
    assert to_markdown(table, compare=True) == (
        "**Table X: demo**\n\n*COCO*\n\n"
        "| Model | Eval   | mIoU paper | mIoU ours        | Δ     |\n"
        "| ----- | ------ | ---------: | ---------------: | ----: |\n"
        "| ViCE  | C 27◇  |      11.40 | 11.50 ± 0.71 (2) | +0.10 |\n"
        "|       | Linear |      25.49 |   **25.50 (1)†** |       |\n"
        "| Other | Linear |        n/a |                — |       |\n\n"
        "- note\n"
    )
    assert to_csv(table).splitlines()[1:3] == [
        "t,COCO,ViCE / C 27◇,mIoU,11.5000,0.7071,2,11.50 ± 0.71 (2),0,0,11.4000,+0.10",
        "t,COCO,ViCE / Linear,mIoU,25.5000,0.0000,1,25.50 (1)†,1,1,25.4900,",
    ]


def test_a_floor_is_never_bold_and_has_no_paper_value_or_delta() -> None:
    floor = Stat(Summary(9.0, 1.4142, 2), paper=25.49, bold=True, floor=True)
    table = Table("t", "T", (Section("", ("",), ("mIoU",), ((("↳ random init",), (floor,)),)),))
    assert (floor.paper_str(), floor.delta()) == ("", "")
    assert (
        to_markdown(table, compare=True).splitlines()[4]
        == "| ↳ random init |            | 9.00 ± 1.41 (2) |     |"
    )
    assert to_csv(table).splitlines()[1] == "t,,↳ random init,mIoU,9.0000,1.4142,2,9.00 ± 1.41 (2),0,0,,"


def test_latex_escape_symbols_and_code() -> None:
    assert latex_escape("25.49 ± 0.31 (3)† 5% `a_b` —") == (
        r"25.49 $\pm$ 0.31 (3)$^\dagger$ 5\% \texttt{a\_b} ---"
    )
    assert latex_escape("↳ raw colours") == r"$\hookrightarrow$ raw colours"


def test_table5_baseline_is_the_hub_of_one_change_studies() -> None:
    keys = [("s", 64, 0.25, 16), ("s", 64, 0.5, 16), ("s", 64, 0.5, 32), ("s", 96, 0.5, 16)]
    assert baseline_index(keys) == 1
    assert baseline_index(keys, preferred=("s", 96, 0.5, 16)) == 3
    base = ("synthetic", 64, 0.5, 16, 0, 3, 16, (0.5, 1.5))
    changed = ("synthetic", 64, 0.25, 16, 0, 3, 32, (0.5, 1.5))
    assert change_label(base, changed) == "mask coverage 0.5 → 0.25; D 16 → 32"


def test_decomposition_labels_match_the_paper_columns() -> None:
    from analysis.layout import Cell

    def label(*key: object) -> str:
        return decomposition_label(Cell(tuple(key), pd.DataFrame(), pd.DataFrame(), (), False))

    assert label("cityscapes", 256, "pixel", 1, 0.0, "fpn") == "FPN 1px"
    assert label("cityscapes", 512, "grid", 20, 0.25, "deeplabv3plus") == "DLV3+ grid 20px +mask 25%"


# The paper transcription -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "axes"),
    [(1, TABLE1_AXES), (2, TABLE2_AXES), (3, TABLE3_AXES), (4, TABLE4_AXES), (6, TABLE6_AXES)],
)
def test_paper_configs_name_exactly_the_table_axes(number: int, axes: tuple[str, ...]) -> None:
    configs = [row["config"] for row in paper_rows(number) if row.get("config") is not None]
    assert configs and all(set(config) == set(axes) for config in configs)


def test_table5_baseline_names_exactly_the_table_axes() -> None:
    assert set(load_paper()["tables"]["5"]["baseline"]) == set(TABLE5_AXES)


def test_every_unreadable_paper_cell_carries_a_note() -> None:
    for number in (1, 2, 3, 4, 6):
        for row in paper_rows(number):
            values = [row.get(k) for k in ("miou", "acc", "cluster_miou", "linear_miou") if k in row]
            assert all(v is not None for v in values) or row.get("note"), row


def test_paper_numbers_transcribed() -> None:
    table1 = {(r["dataset"], r["model"], r["eval"]): (r["miou"], r["acc"]) for r in paper_rows(1)}
    assert table1[("cocostuff", "ViCE (low-res)", "Linear")] == (25.49, 62.78)
    assert table1[("cityscapes", "ViCE (high-res)", "C 256⋆")] == (25.23, 84.28)
    assert table1[("cityscapes", "STEGO*", "Linear")] == (None, None)
    assert [r["miou"] for r in paper_rows(6)] == [26.34, 26.91, 27.20, 26.36, 27.25, 26.08]
    assert [r["miou"] for r in paper_rows(3)] == [29.66, 30.42, 31.30, 31.55, 11.56, None, 8.98, 25.53, 29.38]
    timing = paper_timing()
    assert timing["train_step"]["total"] == 4824
    assert (
        sum(v for k, v in timing["train_step"].items() if k != "total") == 4805
    )  # the printed total differs
    assert timing["inference"] == {"segmentation": 57, "cluster": 2395, "linear": 15}


def test_steps_per_epoch_counts_full_global_batches_as_the_sampler_does() -> None:
    from vice.data import sampler

    assert steps_per_epoch(400, 4, 2) == 50
    assert steps_per_epoch(2975, 4, 32) == 23  # Cityscapes train on the paper's 32 GPUs x 4 images
    for num_images, batch_size, world_size in ((400, 4, 2), (403, 4, 2), (2975, 4, 8), (9, 2, 2)):
        expected = sampler.steps_per_epoch(num_images, batch_size, world_size)
        assert steps_per_epoch(num_images, batch_size, world_size) == expected


def test_run_steps_per_epoch_and_epochs_nan_where_a_run_cannot_convert() -> None:
    runs = _runs(
        **{
            "params.data.batch_size": [4, 4, 4, 8],
            "metrics.train/num_images": [400.0, 403.0, np.nan, 4.0],
            "metrics.train/world_size": [2.0, 1.0, 1.0, 1.0],
        }
    )
    runs = runs.astype({"metrics.train/num_images": "float64", "metrics.train/world_size": "float64"})
    per_epoch = run_steps_per_epoch(runs)
    np.testing.assert_array_equal(per_epoch, [50.0, 100.0, np.nan, np.nan])  # 4 images < one batch of 8
    steps = pd.Series([100, 150, 1000])
    np.testing.assert_allclose(to_epochs(steps, pd.Series([50.0, 50.0, 300.0])), [2.0, 3.0, 3.333333])
    assert run_steps_per_epoch(_runs(**{"params.data.batch_size": [4]})).isna().all()  # nothing logged


def test_paper_only_rows_split_around_the_vice_rows() -> None:
    paper = [
        {"dataset": "cocostuff", "model": "IIC", "config": None},
        {"dataset": "cityscapes", "model": "IIC", "config": None},
        {"dataset": "cocostuff", "model": "ViCE", "config": {"data.name": "cocostuff"}},
        {"dataset": "cocostuff", "model": "STEGO*", "config": None},
        {"dataset": "cocostuff", "model": "ViCE (high-res)", "config": {"data.name": "cocostuff"}},
    ]
    before, after = paper_only_rows(paper, "cocostuff")
    assert [p["model"] for p in before] == ["IIC"] and [p["model"] for p in after] == ["STEGO*"]
    assert paper_only_rows(paper, "cityscapes") == ([paper[1]], [])  # no ViCE row: all before
    assert paper_only_rows(paper, "synthetic") == ([], [])
    before, after = paper_only_rows(paper_rows(1), "cocostuff")
    assert [p["model"] for p in before] == ["ResNet50", "MoCoV2", "DINO*", "IIC", *["PiCIE"] * 6, "PiCIE+H"]
    assert [(p["model"], p["vit"]) for p in after] == [("STEGO*", True), ("STEGO*", True)]
