"""Two sweeps of one experiment side by side (``vice-tables --compare-sweeps A B``).

Per cell of the experiment's table (the same axes as :mod:`analysis.tables` / :mod:`analysis.figures`):
A's and B's linear mIoU over seeds, Δ = B - A with its Welch 95 % interval and what it says
(:func:`analysis.stats.compare` of B against A: ``B higher``, ``B lower``, ``no clear difference``,
``untestable``), and the settings the two sweeps' runs of that cell differ in (any semantic config key
or evaluation tag of :mod:`analysis.cells`, e.g. ``train.max_steps: A=200, B=20``). A cell run by only
one sweep is named as such.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from analysis import stats
from analysis.cells import (
    METRIC,
    PERCENT,
    SEMANTIC_KEYS,
    UNIFORM_TAGS,
    axis_values,
    describe_key,
    metric,
    sort_key,
)
from analysis.figures import FIGURES
from analysis.layout import Cell, collect_cells
from analysis.runs import load_runs
from analysis.tables import (
    TABLE1_AXES,
    TABLE2_AXES,
    TABLE3_AXES,
    TABLE4_AXES,
    TABLE5_AXES,
    TABLE6_AXES,
    resolve_experiment,
)
from vice.launch.tracking.params import override_value

AXES = {
    "table1_main": TABLE1_AXES,
    "table2_resolution": TABLE2_AXES,
    "table3_decomposition": TABLE3_AXES,
    "table4_domain": TABLE4_AXES,
    "table5_hparams": TABLE5_AXES,
    "table6_dk": TABLE6_AXES,
    **{name: spec.axes for name, spec in FIGURES.items()},
}
READING = {
    stats.SUPPORTED: "B higher",
    stats.CONTRADICTED: "B lower",
    stats.INCONCLUSIVE: "no clear difference",
    stats.UNTESTABLE: stats.UNTESTABLE,
}


def _settings(runs: pd.DataFrame, axes: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Per semantic config key and evaluation tag (axes left out): the distinct values the runs hold."""
    values: dict[str, tuple[str, ...]] = {}
    for key in (*SEMANTIC_KEYS, "pretrained"):
        if key not in axes and not (key == "regions.region_size" and "element_size" in axes):
            values[key] = tuple(sorted({override_value(v) for v in axis_values(runs, key)}))
    for name in UNIFORM_TAGS:
        column = f"tags.{name}"
        if name not in axes:
            found = runs[column].dropna() if column in runs else pd.Series(dtype=object)
            values[f"tag {name}"] = tuple(sorted({str(v) for v in found}))
    return values


def setting_differences(a: pd.DataFrame, b: pd.DataFrame, axes: Sequence[str]) -> list[str]:
    """``["train.max_steps: A=200, B=20", ...]``: what A's and B's runs of one cell were run with differently."""
    if a.empty or b.empty:
        return []
    left, right = _settings(a, axes), _settings(b, axes)
    return [
        f"{key}: A={'/'.join(left[key]) or '<unset>'}, B={'/'.join(right[key]) or '<unset>'}"
        for key in left
        if left[key] != right[key]
    ]


@dataclasses.dataclass(frozen=True)
class CellComparison:
    """One cell of the two sweeps: percent mIoU per seed of each, B against A, and what differs."""

    cell: str
    a: tuple[float, ...]
    b: tuple[float, ...]
    comparison: stats.Comparison
    differences: tuple[str, ...]
    only_in: str  # "A", "B" or "" (both ran it)
    smoke: bool


def _values(cell: Cell | None) -> tuple[float, ...]:
    if cell is None:
        return ()
    return tuple(float(v) * PERCENT for v in metric(cell.runs, METRIC).dropna())


def compare_cells(runs_a: pd.DataFrame, runs_b: pd.DataFrame, experiment: str) -> list[CellComparison]:
    """Every cell either sweep has a run in, in table order, B against A.

    Raises:
        MixedCellError: a cell of one sweep pools runs of different protocols or configs.
    """
    axes = AXES[resolve_experiment(experiment)]
    cells_a = {c.key: c for c in collect_cells(runs_a, axes, [], experiment)}
    cells_b = {c.key: c for c in collect_cells(runs_b, axes, [], experiment)}
    results = []
    for key in sorted(set(cells_a) | set(cells_b), key=sort_key):
        a, b = cells_a.get(key), cells_b.get(key)
        has_a, has_b = a is not None and not a.runs.empty, b is not None and not b.runs.empty
        only = "" if has_a == has_b else "A" if has_a else "B"
        differences = setting_differences(a.runs, b.runs, axes) if a is not None and b is not None else []
        results.append(
            CellComparison(
                cell=describe_key(axes, key),
                a=_values(a),
                b=_values(b),
                comparison=stats.compare(_values(b), _values(a)),
                differences=tuple(differences),
                only_in=only,
                smoke=any(c is not None and c.smoke for c in (a, b)),
            )
        )
    return results


def _ours(values: Sequence[float]) -> str:
    if not values:
        return "—"
    series = pd.Series(values, dtype="float64")
    if len(series) == 1:
        return f"{series.mean():.2f} (1)"
    return f"{series.mean():.2f} ± {series.std(ddof=1):.2f} ({len(series)})"


def _sweep_commits(runs: pd.DataFrame) -> str:
    column = "tags.git_commit"
    commits = sorted({str(v)[:10] for v in runs[column].dropna()}) if column in runs else []
    return ", ".join(commits) or "unknown"


def compare_markdown(
    results: Sequence[CellComparison], experiment: str, sweeps: tuple[str, str], commits: tuple[str, str]
) -> str:
    """The comparison as Markdown: a header naming both sweeps, one row per cell, the cells that differ."""
    a, b = sweeps
    lines = [
        f"# {experiment}: sweep {b} (B) against sweep {a} (A)",
        "",
        f"A = {a} (git {commits[0]}), B = {b} (git {commits[1]}). Linear mIoU (%), mean ± std (seeds);"
        f" Δ = B - A with its Welch {round(stats.LEVEL * 100)} % interval; to settle: seeds per cell for"
        f" {round(stats.POWER * 100)} % power at the observed Δ.",
        "",
        "| cell | A | B | Δ | 95 % interval | reading | to settle | settings that differ |",
        "|" + " --- |" * 8,
    ]
    for r in results:
        c = r.comparison
        interval = "" if math.isnan(c.low) else f"[{c.low:+.2f}, {c.high:+.2f}]"
        effect = "" if math.isnan(c.effect) else f"{c.effect:+.2f}"
        differs = "; ".join(r.differences) or (f"only in {r.only_in}" if r.only_in else "")
        settle = (
            "" if c.verdict != stats.INCONCLUSIVE else ("" if c.seeds_needed is None else str(c.seeds_needed))
        )
        row = [r.cell, _ours(r.a), _ours(r.b), effect, interval, READING[c.verdict], settle, differs]
        lines.append("| " + " | ".join(text.replace("|", "\\|") for text in row) + " |")
    named = [r for r in results if r.differences]
    lines.append("")
    if named:
        lines += ["Cells whose settings differ between the sweeps (their Δ is not only the code's):", ""]
        lines += [f"- {r.cell}: {'; '.join(r.differences)}" for r in named]
        lines.append("")
    return "\n".join(lines)


def compare_csv(results: Sequence[CellComparison]) -> str:
    """One row per cell: seeds, means and stds of A and B, Δ, interval, reading, differences."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        [
            "cell",
            "n_a",
            "mean_a",
            "n_b",
            "mean_b",
            "delta",
            "ci_low",
            "ci_high",
            "reading",
            "seeds_needed",
            "only_in",
            "differences",
        ]
    )
    for r in results:
        c = r.comparison

        def number(value: float) -> str:
            return "" if math.isnan(value) else f"{value:.4f}"

        mean_a = sum(r.a) / len(r.a) if r.a else math.nan
        mean_b = sum(r.b) / len(r.b) if r.b else math.nan
        writer.writerow(
            [
                r.cell,
                len(r.a),
                number(mean_a),
                len(r.b),
                number(mean_b),
                number(c.effect),
                number(c.low),
                number(c.high),
                READING[c.verdict],
                "" if c.seeds_needed is None else c.seeds_needed,
                r.only_in,
                "; ".join(r.differences),
            ]
        )
    return out.getvalue()


@dataclasses.dataclass(frozen=True)
class CompareOutputs:
    """What :func:`write_comparison` produced."""

    markdown: str
    files: tuple[Path, ...]
    results: tuple[CellComparison, ...]


def write_comparison(
    tracking_uri: str, experiment: str, sweeps: tuple[str, str], out_dir: Path
) -> CompareOutputs:
    """Compare two sweeps of one experiment; write ``{experiment}_{A}_vs_{B}.md`` and ``.csv``.

    Raises:
        LookupError: the experiment is not in the store, or a sweep has no run in it.
        MixedCellError: a cell of one sweep pools runs of different protocols or configs.
    """
    frames: list[pd.DataFrame] = []
    for sweep in sweeps:
        runs = load_runs(tracking_uri, [experiment], sweep_id=sweep)
        if runs.empty:
            raise LookupError(f"sweep {sweep!r} has no run in experiment {experiment!r}")
        frames.append(runs)
    results = tuple(compare_cells(frames[0], frames[1], experiment))
    commits = (_sweep_commits(frames[0]), _sweep_commits(frames[1]))
    markdown = compare_markdown(results, experiment, sweeps, commits)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"{experiment}_{sweeps[0]}_vs_{sweeps[1]}"
    md, table = Path(f"{stem}.md"), Path(f"{stem}.csv")
    md.write_text(markdown, encoding="utf-8")
    table.write_text(compare_csv(results), encoding="utf-8")
    return CompareOutputs(markdown, (md, table), results)
