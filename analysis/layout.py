"""From runs to ordered cells: which cells a table shows, with their runs, gaps and paper values.

A table shows the paper's cells (for real-data selections) followed by every other cell that has a
run, finished or not. For a selection made only of smoke runs the paper's cells are left out, so a
smoke table shows exactly what the smoke sweep ran.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import pandas as pd

from analysis.cells import check_cell, describe_key, group_runs, is_smoke, overrides, seeds, sort_key
from analysis.runs import FAILED_STATUS, SWEEP_ID_COLUMN, pending_runs, select_latest_finished

DATASET_LABELS = {"cocostuff": "COCO", "cityscapes": "Cityscapes", "synthetic": "Synthetic"}
RESOLUTION_LABELS = {256: "Low", 512: "High"}
BACKBONE_LABELS = {"resnet18": "RN18", "resnet34": "RN34", "resnet50": "RN50", "resnet101": "RN101"}
DECODER_LABELS = {"fpn": "FPN", "deeplabv3plus": "DLV3+"}


@dataclasses.dataclass(frozen=True)
class Cell:
    """The runs behind one table cell.

    Attributes:
        key: the axis values, in the table's axis order.
        runs: the finished runs (latest per run_key), possibly empty.
        pending: runs of this cell whose run_key never finished (failed, killed or running).
        paper: the paper rows whose ``config`` equals ``key``.
        smoke: any of the runs is from a smoke sweep.
    """

    key: tuple[Any, ...]
    runs: pd.DataFrame
    pending: pd.DataFrame
    paper: tuple[dict[str, Any], ...]
    smoke: bool

    def value(self, axes: Sequence[str], axis: str) -> Any:
        """The cell's value on one axis."""
        return self.key[list(axes).index(axis)]


def _paper_key(entry: dict[str, Any], axes: Sequence[str]) -> tuple[Any, ...]:
    config = entry["config"]
    return tuple(config.get(axis) for axis in axes)


def shows_paper(runs: pd.DataFrame) -> bool:
    """Whether a selection's tables show the paper's cells: yes unless every run is from a smoke sweep."""
    return runs.empty or not bool(is_smoke(runs).all())


def collect_cells(
    runs: pd.DataFrame, axes: Sequence[str], paper: Sequence[dict[str, Any]], experiment: str
) -> list[Cell]:
    """Group a selection into cells, paper cells first, and check that each cell may be averaged.

    Args:
        runs: every run of the selection, all statuses (see :func:`analysis.runs.load_runs`).
        axes: the table's axes.
        paper: paper rows with a ``config`` (rows without one are ignored).
        experiment: names the cell in errors.

    Raises:
        MixedCellError: a cell's finished runs differ in protocol, dataset or config.
    """
    finished = group_runs(select_latest_finished(runs), axes)
    pending = group_runs(pending_runs(runs), axes) if not runs.empty else {}
    with_config = [p for p in paper if p.get("config") is not None]
    include_paper = shows_paper(runs)
    keys: list[tuple[Any, ...]] = []
    if include_paper:
        keys += [_paper_key(p, axes) for p in with_config]
    keys += sorted(set(finished) | set(pending), key=sort_key)
    empty = runs.iloc[0:0]
    cells = []
    for key in dict.fromkeys(keys):
        done = finished.get(key, empty)
        todo = pending.get(key, empty)
        check_cell(done, axes, f"{experiment} [{describe_key(axes, key)}]")
        matches = tuple(p for p in with_config if _paper_key(p, axes) == key) if include_paper else ()
        smoke = bool(is_smoke(done).any() or is_smoke(todo).any())
        cells.append(Cell(key=key, runs=done, pending=todo, paper=matches, smoke=smoke))
    return cells


def gap_note(cell: Cell, axes: Sequence[str], experiment: str, where: str) -> str | None:
    """A footnote for a cell with missing seeds: the exact overrides to run, or ``None`` if complete.

    A cell with no finished run gets ``missing``; one whose other seeds failed gets ``incomplete``.
    """
    todo = seeds(cell.pending)
    if not cell.runs.empty and not todo:
        return None
    command = " ".join(overrides(axes, cell.key))
    if todo:
        command += " seed=" + ",".join(str(s) for s in todo)
    status = "missing" if cell.runs.empty else f"incomplete ({len(cell.runs)} finished)"
    unfinished = unfinished_reason(cell.pending)
    if unfinished:
        status += f" ({unfinished})"
    return f"{status}: {where}: run {experiment} with `{command}`"


def unfinished_reason(pending: pd.DataFrame) -> str:
    """Why a cell lacks runs that did not fail: ``running in sweep s2``, ``killed in sweep s1``.

    A job a later sweep resumed is still in the earlier sweep's selection; while it runs there, the
    earlier sweep's table says so instead of only asking for the run. FAILED runs need no reason: the
    note's command re-runs them.
    """
    if pending.empty:
        return ""
    statuses = pending["status"].astype(str)
    sweeps = (
        pending[SWEEP_ID_COLUMN].astype(object)
        if SWEEP_ID_COLUMN in pending
        else pd.Series(None, index=pending.index)
    )
    reasons = {
        f"{status.lower()} in sweep {sweep}" if isinstance(sweep, str) else status.lower()
        for status, sweep in zip(statuses, sweeps, strict=True)
        if status != FAILED_STATUS
    }
    return ", ".join(sorted(reasons))


def dataset_label(name: Any, smoke: bool) -> str:
    """``cocostuff`` -> ``COCO``; smoke cells say so."""
    label = DATASET_LABELS.get(str(name), str(name))
    return f"{label} (smoke)" if smoke else label


def resolution_label(view_size: Any) -> str:
    """``256`` -> ``Low``, ``512`` -> ``High``, other sizes -> ``"96px"``."""
    return RESOLUTION_LABELS.get(view_size, f"{view_size}px")


def section_title(dataset: Any, view_size: Any, smoke: bool) -> str:
    """``Low-resolution Cityscapes``, or ``96px-resolution Synthetic (smoke)``."""
    return f"{resolution_label(view_size)}-resolution {dataset_label(dataset, smoke)}"


def model_label(backbone: Any, decoder: Any) -> str:
    """``RN50, DLV3+``."""
    return f"{BACKBONE_LABELS.get(str(backbone), str(backbone))}, {decoder_label(decoder)}"


def decoder_label(decoder: Any) -> str:
    """``deeplabv3plus`` -> ``DLV3+``."""
    return DECODER_LABELS.get(str(decoder), str(decoder))


def sections_in_order(cells: Sequence[Cell], section_of: Any) -> dict[Any, list[Cell]]:
    """Group cells by ``section_of(cell)``, sections in order of first appearance, cells in order."""
    grouped: dict[Any, list[Cell]] = {}
    for cell in cells:
        grouped.setdefault(section_of(cell), []).append(cell)
    return grouped
