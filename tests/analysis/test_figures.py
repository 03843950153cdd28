"""Figures 5-7 regenerated from the fixture store."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from analysis.cells import summarize
from analysis.cli import main
from analysis.figures import draw_figure, draw_table, figure_data, figure_table, plot_figure, table_plot_data
from analysis.render import Section, Stat, Table
from analysis.runs import load_runs

# Figures -----------------------------------------------------------------------------------------


def errorbar_series(ax: Any) -> dict[str, tuple[list[list[float]], list[float]]]:
    """What an axes plots: ``{label: ([[x, mean], ...], [std, ...])}`` from its error-bar containers."""
    series = {}
    for container in ax.containers:
        line, _, (bars,) = container.lines
        stds = [(top[1] - bottom[1]) / 2.0 for bottom, top in bars.get_segments()]
        series[container.get_label()] = (line.get_xydata().tolist(), stds)
    return series


def paper_marks(ax: Any) -> list[list[float]]:
    """Where an axes draws the paper's value (the collection labelled ``paper``)."""
    return [point for c in ax.collections if c.get_label() == "paper" for point in c.get_offsets().tolist()]


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
    assert list(city["series"]) == ["RN18, FPN, random init"] * 4
    # steps 100, 200, 1000; then the paper's value from random init (its text: 26.05 after 144 epochs)
    assert list(city["x"]) == [2.0, 4.0, 20.0, 144.0] and set(city["xlabel"]) == {"epoch"}
    np.testing.assert_allclose(city["mean"], [11.0, 16.0, 21.0, np.nan])
    assert list(city["n"]) == [2, 2, 2, 0]
    np.testing.assert_allclose(city["paper"], [np.nan, np.nan, np.nan, 26.05])
    np.testing.assert_allclose(city["random_init"], [6.0] * 4)  # (5 + 7) / 2, the runs' floor
    assert coco["paper"].isna().all() and coco["random_init"].isna().all()  # the paper gives no COCO value

    left, right = draw_figure(data, "fig6_random_init").axes
    assert (left.get_xlabel(), right.get_xlabel()) == ("step", "epoch")
    np.testing.assert_allclose(
        errorbar_series(left)["RN50, DLV3+, random init"][0], [[50.0, 5.0], [1000.0, 8.0]]
    )
    city_line, city_std = errorbar_series(right)["RN18, FPN, random init"]
    np.testing.assert_allclose(city_line, [[2.0, 11.0], [4.0, 16.0], [20.0, 21.0]])
    np.testing.assert_allclose(city_std, [np.sqrt(2.0)] * 3)
    floors = {
        line.get_label(): line.get_xydata().tolist()
        for line in right.get_lines()
        if line.get_linestyle() == "--"
    }
    assert floors == {"RN18, FPN, random init ↳ random init": [[2.0, 6.0], [4.0, 6.0], [20.0, 6.0]]}
    assert paper_marks(right) == [[144.0, 26.05]] and paper_marks(left) == []
    table = figure_table(data, "fig6_random_init", "fig6_random_init")
    assert [section.labels for section in table.sections] == [("Series", "step"), ("Series", "epoch")]
    (_, (paper_cell,)) = table.sections[1].rows[3]
    assert (paper_cell.ours(), paper_cell.paper_str()) == ("—", "26.05")


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


def test_table_chart_draws_seeds_floors_the_papers_value_and_marks_smoke() -> None:
    floor = {"floor": True, "smoke": True}
    section = Section(
        "64px-resolution Synthetic (smoke)",
        ("",),
        ("Grid 10px", "Super 10px", "DLV3+"),
        (
            (
                ("mIoU",),
                (
                    Stat(summarize([0.35, 0.37]), paper=31.30, smoke=True),
                    Stat(summarize([0.40, 0.44]), paper=31.55, smoke=True),
                    Stat(None, paper=11.56),  # no finished run: the paper's value alone
                ),
            ),
            (
                ("↳ random init",),
                (Stat(summarize([0.21, 0.21]), **floor), Stat(summarize([0.18, 0.20]), **floor), ""),
            ),
            (("↳ raw colours",), ("", Stat(summarize([0.12]), **floor), "")),
            (("Time",), (Stat(summarize([42.0], scale=1.0), kind="duration", smoke=True), "", "")),
        ),
    )
    table = Table("table3_decomposition_smoke", "Table 3: decomposition", (section,))
    data = table_plot_data(table)
    assert list(data["series"]) == ["Grid 10px", "Super 10px", "DLV3+"]
    assert list(data["x"]) == [0.0, 1.0, 2.0] and list(data["n"]) == [2, 2, 0]
    np.testing.assert_allclose(data["mean"], [36.0, 42.0, np.nan])
    assert list(data["seeds"].fillna("")) == ["35.0000;37.0000", "40.0000;44.0000", ""]
    np.testing.assert_allclose(data["paper"], [31.30, 31.55, 11.56])
    np.testing.assert_allclose(data["random_init"], [21.0, 19.0, np.nan])  # the floor row under each bar
    np.testing.assert_allclose(data["raw_colours"], [np.nan, 12.0, np.nan])

    (ax,) = draw_table(data, table).axes
    assert ax.get_title() == "64px-resolution Synthetic (smoke)†"
    assert [label.get_text() for label in ax.get_yticklabels()] == ["Grid 10px", "Super 10px", "DLV3+"]
    np.testing.assert_allclose(
        [(bar.get_y() + bar.get_height() / 2, bar.get_width()) for bar in ax.patches], [(0, 36), (1, 42)]
    )
    (seeds,) = [c for c in ax.collections if len(c.get_offsets()) == 4]
    np.testing.assert_allclose(seeds.get_offsets(), [[35, 0], [37, 0], [40, 1], [44, 1]])
    np.testing.assert_allclose(paper_marks(ax), [[31.30, 0], [31.55, 1], [11.56, 2]])
    floors = {
        c.get_label(): np.asarray(c.get_segments()).tolist()
        for c in ax.collections
        if c.get_label().startswith("↳")
    }
    np.testing.assert_allclose(floors["↳ random init"], [[[21, -0.4], [21, 0.4]], [[19, 0.6], [19, 1.4]]])
    np.testing.assert_allclose(floors["↳ raw colours"], [[[12, 0.6], [12, 1.4]]])
    dashes = {c.get_label(): c.get_linestyle()[0][1] for c in ax.collections if c.get_label().startswith("↳")}
    assert all(dashes.values()) and dashes["↳ random init"] != dashes["↳ raw colours"]  # dashed vs dotted
