"""Figures 5-7 regenerated from the fixture store."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from analysis.cli import main
from analysis.figures import draw_figure, figure_data, figure_table, plot_figure
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
