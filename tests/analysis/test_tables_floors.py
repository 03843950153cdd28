"""The floors (random init, raw colours) beside every table's cells."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from mlflow_fixtures import VICE_FAMILIES, check_golden

from analysis.render import Stat
from analysis.runs import load_runs
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
    write_experiment,
)
from vice.evaluate.run import RANDOM_PREFIX, RGB_PREFIX


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
