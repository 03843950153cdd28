"""Figures 5-7 of the paper rebuilt from MLflow runs, as PNG + PDF, with the plotted data as CSV.

Every figure is built in two steps: ``*_data`` turns runs into a tidy frame with the columns
:data:`PLOT_COLUMNS` (one row per plotted point: mean ± std over seeds, in percent), and
:func:`draw_figure` draws that frame (:func:`plot_figure` also saves it). Tests check the frame and the
data of the drawn lines, not the pixels.

- Fig. 5 (``fig5_element_size``): mIoU against base element size, superpixel vs grid, error bars;
- Fig. 6 (``fig6_random_init``): mIoU over epochs (intermediate evaluations) from random init; a panel
  whose runs lack what turns steps into epochs (see :func:`run_steps_per_epoch`) is plotted over steps;
- Fig. 7 (``fig7_backbone``): mIoU against backbone depth, one panel per dataset.

Every figure, and the bar chart of a table (:func:`plot_table`), draws each seed as a dot over the
mean ± std bar, the floors (random init, raw colours) as reference lines, the paper's value as a black
star where the paper gives one (the tables' cells; Fig. 6's two values from the text; Figs. 5 and 7
print none), and a † in the title of a panel of smoke data.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.cells import METRIC, Summary, axis_values, summarize
from analysis.cells import metric as metric_column
from analysis.layout import Cell, collect_cells, gap_note, model_label, resolution_label, section_title
from analysis.paper import paper_figure_values
from analysis.render import SMOKE_FOOTNOTE, SMOKE_MARK, Section, Stat, Table
from analysis.runs import metric_history
from vice.launch.tracking.names import NUM_IMAGES_METRIC

PLOT_COLUMNS = (
    "panel",
    "series",
    "x",
    "xlabel",
    "mean",
    "std",
    "n",
    "smoke",
    "note",
    "seeds",
    "paper",
    "random_init",
    "raw_colours",
)
#: The floors drawn as reference lines: (plot column, label, metric of the same runs' final evaluation).
FLOOR_LINES = (
    ("random_init", "↳ random init", "eval/baseline_random_linear_miou"),
    ("raw_colours", "↳ raw colours", "eval/baseline_rgb_linear_miou"),
)
#: Line styles of the floors, in :data:`FLOOR_LINES` order: random init dashed, raw colours dotted.
FLOOR_STYLES = ("--", ":")
SEED_SEPARATOR = ";"
#: How the paper's value is drawn: a black star, labelled once per axes.
PAPER_MARKER = {"marker": "*", "s": 90, "color": "black", "zorder": 4, "label": "paper"}
#: Metric the trainer logs with the number of ranks (one global batch = data.batch_size x world size).
WORLD_SIZE_METRIC = "train/world_size"
#: Fig. 6's x label for a panel whose runs cannot be converted to epochs.
STEP_LABEL = "step"
#: Decimals kept of a fractional epoch, so equal epochs of different runs fall on one point.
EPOCH_DECIMALS = 6
TABLE_XLABEL = "bar position"
SERIES_LABELS = {"slic": "superpixel", "grid": "grid", "pixel": "pixel"}
_PNG_METADATA: dict[str, Any] = {"Software": None}
_PDF_METADATA: dict[str, Any] = {"CreationDate": None}


@dataclasses.dataclass(frozen=True)
class FigureSpec:
    """How a figure experiment is grouped and drawn."""

    title: str
    axes: tuple[str, ...]
    xlabel: str


FIGURES = {
    "fig5_element_size": FigureSpec(
        "Fig. 5: superpixel vs grid over base element size",
        ("data.name", "views.view_size", "regions.method", "element_size"),
        "base element size (px)",
    ),
    "fig6_random_init": FigureSpec(
        "Fig. 6: learning from random initialization",
        ("data.name", "views.view_size", "model.backbone", "model.decoder", "pretrained"),
        "epoch",
    ),
    "fig7_backbone": FigureSpec(
        "Fig. 7: backbone depth",
        ("data.name", "views.view_size", "model.backbone"),
        "ResNet depth",
    ),
}


def _point(
    cell: Cell,
    panel: str,
    series: str,
    x: float,
    values: Any,
    note: str | None,
    xlabel: str,
    paper: float | None = None,
) -> dict[str, Any]:
    summary = summarize(values)
    point = {
        "panel": panel,
        "series": series,
        "x": x,
        "xlabel": xlabel,
        "mean": summary.mean if summary else np.nan,
        "std": summary.std if summary else np.nan,
        "n": summary.n if summary else 0,
        "smoke": cell.smoke,
        "note": note or "",
        "seeds": seed_text(summary.values if summary else ()),
        "paper": np.nan if paper is None else float(paper),
    }
    for column, _, floor in FLOOR_LINES:
        floor_summary = summarize(metric_column(cell.runs, floor))
        point[column] = floor_summary.mean if floor_summary else np.nan
    return point


def _frame(points: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(points, columns=list(PLOT_COLUMNS))
    panels = list(dict.fromkeys(frame["panel"]))
    frame["_panel"] = frame["panel"].map(panels.index)
    frame = frame.sort_values(["_panel", "series", "x"], kind="stable").drop(columns="_panel")
    return frame.astype(
        {
            "x": "float64",
            "mean": "float64",
            "std": "float64",
            "n": "int64",
            "smoke": "bool",
            "paper": "float64",
            "random_init": "float64",
            "raw_colours": "float64",
        }
    ).reset_index(drop=True)


def seed_text(values: Any) -> str:
    """Seed values as the plot CSV holds them: ``"40.0000;44.0000"``."""
    return SEED_SEPARATOR.join(f"{v:.4f}" for v in values)


def _metric_values(cell: Cell, metric: str) -> pd.Series:
    column = f"metrics.{metric}"
    return cell.runs[column] if column in cell.runs else pd.Series(dtype="float64")


def backbone_depth(backbone: Any) -> int:
    """``resnet101`` -> ``101``.

    Raises:
        ValueError: the name carries no depth.
    """
    match = re.search(r"(\d+)$", str(backbone))
    if match is None:
        raise ValueError(f"model.backbone={backbone!r} has no depth: expected e.g. resnet50")
    return int(match.group(1))


def element_size_data(
    runs: pd.DataFrame, experiment: str = "fig5_element_size", metric: str = METRIC
) -> pd.DataFrame:
    """Fig. 5 data: one panel per dataset and resolution, series superpixel / grid, x = element size."""
    spec = FIGURES["fig5_element_size"]
    points = []
    for cell in collect_cells(runs, spec.axes, [], experiment):
        dataset, size, method, element = cell.key
        panel = section_title(dataset, size, cell.smoke)
        series = SERIES_LABELS.get(str(method), str(method))
        note = gap_note(cell, spec.axes, experiment, f"{panel} / {series} {element}px")
        values = _metric_values(cell, metric)
        points.append(_point(cell, panel, series, float(element), values, note, spec.xlabel))
    return _frame(points)


def backbone_data(
    runs: pd.DataFrame, experiment: str = "fig7_backbone", metric: str = METRIC
) -> pd.DataFrame:
    """Fig. 7 data: one panel per dataset and resolution, x = ResNet depth."""
    spec = FIGURES["fig7_backbone"]
    points = []
    for cell in collect_cells(runs, spec.axes, [], experiment):
        dataset, size, backbone = cell.key
        panel = section_title(dataset, size, cell.smoke)
        note = gap_note(cell, spec.axes, experiment, f"{panel} / {backbone}")
        points.append(
            _point(
                cell,
                panel,
                "linear probe",
                float(backbone_depth(backbone)),
                _metric_values(cell, metric),
                note,
                spec.xlabel,
            )
        )
    return _frame(points)


def steps_per_epoch(num_images: int, batch_size: int, world_size: int) -> int:
    """Training steps in one pass over the training images, as the job's sampler counts them.

    A step takes one global batch of ``batch_size * world_size`` images and the remainder of an epoch
    is dropped (:func:`vice.data.sampler.steps_per_epoch`).

    Args:
        num_images: training images (the ``train/num_images`` metric).
        batch_size: images per rank (``data.batch_size``).
        world_size: ranks (the ``train/world_size`` metric).
    """
    return num_images // (batch_size * world_size)


def run_steps_per_epoch(runs: pd.DataFrame) -> pd.Series:
    """Steps per epoch of each run, from ``train/num_images``, ``data.batch_size`` and ``train/world_size``.

    Returns:
        Float per run (index aligned with ``runs``), NaN where a run lacks one of the three (a run from
        before the job logged ``train/num_images``) or one global batch is more than its images.
    """
    num_images = metric_column(runs, NUM_IMAGES_METRIC)
    world_size = metric_column(runs, WORLD_SIZE_METRIC)
    batch_size = pd.to_numeric(axis_values(runs, "data.batch_size"), errors="coerce")
    values = [
        float(steps_per_epoch(int(n), int(b), int(w))) if not np.isnan([n, b, w]).any() else np.nan
        for n, b, w in zip(num_images, batch_size, world_size, strict=True)
    ]
    return pd.Series(values, index=runs.index, dtype="float64").where(lambda v: v > 0)


def to_epochs(steps: pd.Series, per_epoch: pd.Series) -> pd.Series:
    """Training steps -> (fractional) epochs, elementwise, rounded to :data:`EPOCH_DECIMALS`."""
    return (steps.astype("float64") / per_epoch).round(EPOCH_DECIMALS)


def random_init_data(
    runs: pd.DataFrame, tracking_uri: str, experiment: str = "fig6_random_init", metric: str = METRIC
) -> pd.DataFrame:
    """Fig. 6 data: per panel (dataset, resolution) and series (model, init), mIoU at each evaluated epoch.

    Reads every logged value of ``metric`` (intermediate evaluations log it with ``step`` = training step)
    and turns each run's steps into epochs with :func:`run_steps_per_epoch`. A panel with a run that
    cannot be converted stays in steps (``xlabel`` says which).
    """
    spec = FIGURES["fig6_random_init"]
    series_of = []
    for cell in collect_cells(runs, spec.axes, [], experiment):
        dataset, size, backbone, decoder, pretrained = cell.key
        panel = section_title(dataset, size, cell.smoke)
        series = f"{model_label(backbone, decoder)}, {'ImageNet init' if pretrained else 'random init'}"
        note = gap_note(cell, spec.axes, experiment, f"{panel} / {series}")
        history = metric_history(tracking_uri, list(cell.runs["run_id"]), metric)
        per_epoch = dict(zip(cell.runs["run_id"], run_steps_per_epoch(cell.runs), strict=True))
        history["per_epoch"] = history["run_id"].map(per_epoch).astype("float64")
        series_of.append((cell, panel, series, note, history))
    in_steps = {panel for _, panel, _, _, history in series_of if history["per_epoch"].isna().any()}
    points = []
    for cell, panel, series, note, history in series_of:
        xlabel = STEP_LABEL if panel in in_steps else spec.xlabel
        if history.empty:
            points.append(_point(cell, panel, series, np.nan, [], note, xlabel))
        steps = history["step"].astype("float64")
        x = steps if panel in in_steps else to_epochs(steps, history["per_epoch"])
        series_points = [
            _point(cell, panel, series, float(value), values, note, xlabel)
            for value, values in history["value"].groupby(x, sort=True)
        ]
        if panel not in in_steps:  # the paper's values are in epochs
            for epochs, paper in random_init_paper_values(cell):
                series_points = with_paper(
                    series_points, epochs, paper, _point(cell, panel, series, epochs, [], note, xlabel)
                )
        points += series_points
    return _frame(points)


def random_init_paper_values(cell: Cell) -> list[tuple[float, float]]:
    """The paper's Fig. 6 values for a cell, as ``(epochs, linear mIoU in %)``: none for smoke data.

    The paper's text gives the final value of its low-resolution Cityscapes runs, from random init and
    from ImageNet init; a value belongs to the cell of its dataset, resolution and init.
    """
    dataset, size, _, _, pretrained = cell.key
    if cell.smoke:
        return []
    return [
        (float(entry["epochs"]), float(entry["linear_miou"]))
        for entry in paper_figure_values(6)
        if (entry["dataset"], entry["resolution"], bool(entry["pretrained"]))
        == (dataset, resolution_label(size), bool(pretrained))
    ]


def with_paper(
    points: list[dict[str, Any]], x: float, paper: float, empty: dict[str, Any]
) -> list[dict[str, Any]]:
    """A series' points with the paper's value at ``x``: on our point at ``x``, else on ``empty`` (n = 0)."""
    if any(point["x"] == x for point in points):
        return [{**point, "paper": paper} if point["x"] == x else point for point in points]
    return [*points, {**empty, "paper": paper}]


def figure_data(
    runs: pd.DataFrame, figure: str, tracking_uri: str | None = None, experiment: str | None = None
) -> pd.DataFrame:
    """Dispatch to the ``*_data`` builder of a figure experiment (``fig5_element_size``, ...).

    Raises:
        ValueError: Fig. 6 without a tracking URI (it reads per-step metric histories).
    """
    name = experiment or figure
    if figure == "fig5_element_size":
        return element_size_data(runs, name)
    if figure == "fig7_backbone":
        return backbone_data(runs, name)
    if figure == "fig6_random_init":
        if tracking_uri is None:
            raise ValueError("fig6_random_init reads metric histories: pass the tracking URI")
        return random_init_data(runs, tracking_uri, name)
    raise KeyError(f"unknown figure {figure!r}: use one of {', '.join(FIGURES)}")


def figure_table(data: pd.DataFrame, figure: str, experiment: str) -> Table:
    """The plotted data as a table: one section per panel, one row per point."""
    spec = FIGURES[figure]
    sections = []
    for panel, rows in data.groupby("panel", sort=False):
        body = []
        for row in rows.itertuples(index=False):
            summary = None if row.n == 0 else Summary(float(row.mean), float(row.std), int(row.n))
            x = "" if np.isnan(row.x) else f"{row.x:g}"
            paper = None if np.isnan(row.paper) else float(row.paper)
            body.append(((str(row.series), x), (Stat(summary, paper=paper, smoke=bool(row.smoke)),)))
        xlabel = str(rows["xlabel"].iloc[0])
        sections.append(Section(str(panel), ("Series", xlabel), ("mIoU",), tuple(body)))
    notes = list(dict.fromkeys(n for n in data["note"] if n))
    if data.empty:
        notes.append(f"no run of {experiment} in this selection")
    if bool(data["smoke"].any()):
        notes.append(SMOKE_FOOTNOTE)
    return Table(experiment, spec.title, tuple(sections), tuple(notes))


def _save(figure: Figure, data: pd.DataFrame, stem: Path) -> tuple[Path, Path, Path]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    png, pdf, csv = stem.with_suffix(".png"), stem.with_suffix(".pdf"), Path(f"{stem}_plot.csv")
    figure.savefig(png, dpi=150, metadata=_PNG_METADATA)
    figure.savefig(pdf, metadata=_PDF_METADATA)
    data.to_csv(csv, index=False, float_format="%.4f", lineterminator="\n")
    return png, pdf, csv


def draw_figure(data: pd.DataFrame, figure: str) -> Figure:
    """Draw a figure's data: one axes per ``panel``, one error-bar line per ``series`` (sorted by name).

    Points without a finished run (``n == 0``) are left out; each axes' x label is its panel's ``xlabel``.
    """
    spec = FIGURES[figure]
    panels = list(dict.fromkeys(data["panel"])) or [""]
    fig = Figure(figsize=(4.5 * len(panels), 3.6), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels, strict=True):
        rows = data[(data["panel"] == panel) & (data["n"] > 0)]
        for series, points in rows.groupby("series", sort=True):
            bars = ax.errorbar(
                points["x"], points["mean"], yerr=points["std"], marker="o", capsize=3, label=str(series)
            )
            draw_seeds(ax, points, bars.lines[0].get_color())
            draw_floors(ax, points, str(series), bars.lines[0].get_color())
        paper = data.loc[data["panel"] == panel, ["x", "paper"]].dropna()
        if not paper.empty:
            ax.scatter(paper["x"], paper["paper"], **PAPER_MARKER)
        if figure == "fig7_backbone" and not rows.empty:
            ax.set_xticks(sorted(set(rows["x"])))
        labels = data.loc[data["panel"] == panel, "xlabel"]
        xlabel = str(labels.iloc[0]) if not labels.empty else spec.xlabel
        smoke = bool(data.loc[data["panel"] == panel, "smoke"].any())
        ax.set(title=f"{panel}{SMOKE_MARK if smoke else ''}", xlabel=xlabel, ylabel="mIoU (%)")
        if not rows.empty or not paper.empty:
            ax.legend(fontsize="small")
    fig.suptitle(spec.title)
    return fig


def seed_values(points: pd.DataFrame) -> tuple[list[float], list[float]]:
    """Every seed of the points as ``(xs, values)``: one dot per seed, at its point's x."""
    xs: list[float] = []
    values: list[float] = []
    for x, text in zip(points["x"], points["seeds"].fillna(""), strict=True):
        seeds = [float(v) for v in str(text).split(SEED_SEPARATOR) if v]
        xs += [float(x)] * len(seeds)
        values += seeds
    return xs, values


def draw_seeds(ax: Any, points: pd.DataFrame, color: Any) -> None:
    """One dot per seed over a series' mean ± std bars (unlabelled: the legend names the series)."""
    xs, values = seed_values(points)
    if values:
        ax.scatter(xs, values, s=12, color=color, alpha=0.5, zorder=3)


def draw_floors(ax: Any, points: pd.DataFrame, series: str, color: Any) -> None:
    """The floors of a series' runs as dashed (random init) and dotted (raw colours) reference lines."""
    for (column, label, _), style in zip(FLOOR_LINES, FLOOR_STYLES, strict=True):
        floor = points[["x", column]].dropna()
        if not floor.empty:
            ax.plot(floor["x"], floor[column], linestyle=style, color=color, label=f"{series} {label}")


def plot_figure(data: pd.DataFrame, figure: str, stem: Path) -> tuple[Path, Path, Path]:
    """Draw a figure's data (:func:`draw_figure`) and save it.

    Returns:
        The PNG, PDF and CSV (the plotted data) paths: ``stem.png``, ``stem.pdf``, ``stem_plot.csv``.
    """
    return _save(draw_figure(data, figure), data, stem)


def is_bar(labels: Sequence[str], column: str, stat: Stat) -> bool:
    """Whether a table cell is plotted as a bar: a percent value, not a floor, in a row or column ``*mIoU*``."""
    return stat.kind == "pct" and not stat.floor and any("mIoU" in name for name in (*labels, column))


def floor_column(labels: Sequence[str]) -> str | None:
    """The plot column of a floor row (``↳ random init`` -> ``random_init``), None for another row."""
    return next((column for column, label, _ in FLOOR_LINES if label in labels), None)


def table_plot_data(table: Table) -> pd.DataFrame:
    """The mIoU cells of a table (a column or row named ``*mIoU*``) as bars, in table order.

    Columns: panel = section title, series = the bar label (row and column labels, ``mIoU`` left out),
    x = bar position in its panel (xlabel ``bar position``), mean/std/n/smoke/seeds as in
    :data:`PLOT_COLUMNS`, paper = the paper's value (NaN where it prints none), note empty. A floor row
    (``↳ random init``, ``↳ raw colours``) is no bar: its value goes to the ``random_init`` /
    ``raw_colours`` column of the bar above it in the same column.
    """
    points: list[dict[str, Any]] = []
    for section in table.sections:
        position = 0
        above: dict[int, dict[str, Any]] = {}  # column index -> the last bar in that column
        for labels, values in section.rows:
            floor = floor_column(labels)
            for index, (column, value) in enumerate(zip(section.columns, values, strict=True)):
                if floor is not None and isinstance(value, Stat) and value.summary and index in above:
                    above[index][floor] = value.summary.mean
                if not (isinstance(value, Stat) and is_bar(labels, column, value)):
                    continue
                s = value.summary
                point = {
                    "panel": section.title or table.name,
                    "series": " / ".join(n for n in (*labels, column) if n and n != "mIoU"),
                    "x": float(position),
                    "xlabel": TABLE_XLABEL,
                    "mean": s.mean if s else np.nan,
                    "std": s.std if s else np.nan,
                    "n": s.n if s else 0,
                    "smoke": value.smoke,
                    "note": "",
                    "seeds": seed_text(s.values if s else ()),
                    "paper": np.nan if value.paper is None else value.paper,
                }
                points.append(point)
                above[index] = point
                position += 1
    return pd.DataFrame(points, columns=list(PLOT_COLUMNS))


def plot_table(table: Table, stem: Path) -> tuple[Path, Path, Path]:
    """A horizontal bar chart of a table's mIoU cells, one panel per section (:func:`draw_table`).

    Returns:
        The PNG, PDF and CSV (the plotted data) paths.
    """
    data = table_plot_data(table)
    return _save(draw_table(data, table), data, stem)


def draw_table(data: pd.DataFrame, table: Table) -> Figure:
    """Draw :func:`table_plot_data`: per bar the mean ± std, every seed as a dot, the floors as dashed
    (random init) and dotted (raw colours) ticks across the bar, the paper's value as a black star; a
    label for every cell, with or without a finished run; † in the title of a panel of smoke data."""
    panels = list(dict.fromkeys(data["panel"])) or [table.name]
    height = max(2.5, 0.3 * max((int((data["panel"] == p).sum()) for p in panels), default=1) + 1.5)
    fig = Figure(figsize=(5.5 * len(panels), height), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels, strict=True):
        cells = data[data["panel"] == panel]
        bars = cells[cells["n"] > 0]
        ax.barh(bars["x"], bars["mean"], xerr=bars["std"], capsize=3, color="tab:blue", alpha=0.6)
        positions, values = seed_values(bars)
        if values:
            ax.scatter(values, positions, s=12, color="tab:blue", zorder=3)
        for (column, label, _), style in zip(FLOOR_LINES, FLOOR_STYLES, strict=True):
            floor = bars[["x", column]].dropna()
            if not floor.empty:
                ax.vlines(
                    floor[column],
                    floor["x"] - 0.4,
                    floor["x"] + 0.4,
                    linestyles=style,
                    color="black",
                    label=label,
                )
        paper = cells[["x", "paper"]].dropna()
        if not paper.empty:
            ax.scatter(paper["paper"], paper["x"], **PAPER_MARKER)
        ax.set_yticks(cells["x"], list(cells["series"]), fontsize="small")
        ax.invert_yaxis()
        smoke = bool(cells["smoke"].any())
        ax.set(title=f"{panel}{SMOKE_MARK if smoke else ''}", xlabel="mIoU (%), mean ± std over seeds")
        if bars.empty:
            ax.text(0.5, 0.5, "no finished run", ha="center", va="center", transform=ax.transAxes)
        if ax.get_legend_handles_labels()[0]:  # floors or the paper's value, beside the bars
            ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(f"{table.title.split(':')[0]} ({table.name})")
    return fig
