"""The paper's own numbers (``analysis/paper_results.json``), transcribed from the text extraction.

Values are percent (mIoU, accuracy) or as printed (times). ``None`` marks a cell the source leaves
unreadable or unreported; such cells carry a ``note``. A cell's ``config`` is this repo's reading of the
run configuration that reproduces it, keyed by the table axes (see :mod:`analysis.cells`); JSON lists
in configs are returned as tuples so they compare equal to cast MLflow params.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

PAPER_FILE = Path(__file__).with_name("paper_results.json")
_DURATION = re.compile(r"^\s*(?:(\d+)\s*h)?\s*(?:(\d+)\s*min)?")


def _tuples(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_tuples(v) for v in value]
    return value


def _config_tuples(entry: dict[str, Any]) -> dict[str, Any]:
    config = entry.get("config")
    if config is None:
        return entry
    return {**entry, "config": {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}}


@cache
def load_paper(path: Path = PAPER_FILE) -> dict[str, Any]:
    """Return the whole paper data file (tables keyed "1".."8", figures keyed "5".."7")."""
    with path.open(encoding="utf-8") as handle:
        data: dict[str, Any] = json.load(handle)
    return _tuples(data)


def paper_table(number: int) -> dict[str, Any]:
    """Return one table's entry (title, experiment, rows, notes).

    Raises:
        KeyError: the paper data has no such table (it holds Tables 1-8).
    """
    tables = load_paper()["tables"]
    if str(number) not in tables:
        raise KeyError(
            f"{PAPER_FILE.name} has no Table {number}; it holds Tables {', '.join(sorted(tables))}"
        )
    entry: dict[str, Any] = tables[str(number)]
    return entry


def paper_figure_values(number: int) -> list[dict[str, Any]]:
    """The values the paper's text gives for one of its figures (the plots themselves are unreadable).

    Fig. 6 has two (``dataset``, ``resolution``, ``epochs``, ``linear_miou``, ``pretrained``); Figs. 5
    and 7 have none.

    Raises:
        KeyError: the paper data has no such figure (it holds Figs. 5-7).
    """
    figures = load_paper()["figures"]
    if str(number) not in figures:
        raise KeyError(f"{PAPER_FILE.name} has no Fig. {number}; it holds Figs. {', '.join(sorted(figures))}")
    return list(figures[str(number)].get("text_values", []))


def paper_rows(number: int) -> list[dict[str, Any]]:
    """Return a table's rows, with each ``config`` list value turned into a tuple."""
    return [_config_tuples(row) for row in paper_table(number).get("rows", [])]


def paper_timing() -> dict[str, dict[str, int]]:
    """Return Tables 7 and 8 in milliseconds: ``{"train_step": {...}, "inference": {...}}``."""
    return {"train_step": dict(paper_table(7)["phases"]), "inference": dict(paper_table(8)["models"])}


def parse_duration(text: str) -> float:
    """Parse a printed duration such as ``"34h 4min"`` or ``"92h 20min (est.)"`` into seconds.

    Raises:
        ValueError: the text holds neither hours nor minutes.
    """
    match = _DURATION.match(text)
    if match is None or not any(match.groups()):
        raise ValueError(f"cannot read a duration from {text!r}: expected e.g. '5h 31min'")
    hours, minutes = (int(g) if g else 0 for g in match.groups())
    return float(hours * 3600 + minutes * 60)
