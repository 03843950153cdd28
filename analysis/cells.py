"""Group runs into table cells by axis values, refuse mixed cells, and summarize seeds.

An *axis* is a flattened config key read from the run's params (``regions.method``,
``views.view_size``, ...) or one of the derived axes:

- ``pretrained``: ``model.pretrained`` is set (a weights path) rather than ``None`` (random init);
- ``element_size``: the base element side in pixels: 1 for ``regions.method=pixel``, else
  ``regions.region_size``;
- ``eval_dataset``: the ``eval_dataset`` tag, else ``eval.dataset``, else ``data.name``.

A cell is the set of runs that share every axis value of a table; the seeds inside a cell are
averaged. Everything else that shapes a result (the evaluation tags and the semantic config keys of
:class:`vice.config.Config`) must agree inside a cell, or :func:`check_cell` refuses it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from vice.config import Config
from vice.launch.tracking.identity import is_semantic
from vice.launch.tracking.names import ACTIVE_TIME_METRIC
from vice.launch.tracking.params import override_value

DERIVED_AXES = ("pretrained", "element_size", "eval_dataset")
#: Tags that must agree inside a cell: the evaluation tags and `smoke` (an axis of the table is exempt).
UNIFORM_TAGS = (
    "eval_protocol",
    "eval_dataset",
    "eval_short_side",
    "eval_split_set",
    "eval_superpixel_pool",
    "mapping_fit_set",
    "smoke",
)
#: Semantic config keys (they enter the run key: :data:`vice.launch.tracking.identity.NON_SEMANTIC_KEYS`)
#: that may still differ inside a cell, each for its reason.
CELL_FREE_KEYS = frozenset(
    {
        "seed",  # a cell averages its seeds
        "eval.dataset",  # checked as the eval_dataset tag (UNIFORM_TAGS) and the eval_dataset axis
        "model.pretrained",  # a path per machine: checked as the derived axis `pretrained` (set or not)
        "train.eval_every",  # intermediate evaluations: the final model's evaluation is what a cell shows
    }
)
PERCENT = 100.0
#: The headline metric: the linear probe's mIoU on the evaluation split.
METRIC = "eval/linear_miou"


class MixedCellError(ValueError):
    """Runs that would be averaged into one cell differ in protocol, dataset or config."""


def _flat_keys(schema: type, prefix: str = "") -> list[str]:
    keys: list[str] = []
    for f in dataclasses.fields(schema):
        inner = f.default_factory if f.default_factory is not dataclasses.MISSING else None
        if inner is not None and dataclasses.is_dataclass(inner):
            keys += _flat_keys(inner, f"{prefix}{f.name}.")  # type: ignore[arg-type]
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


#: The flattened config keys whose values must agree inside a cell (axes excepted).
SEMANTIC_KEYS = tuple(k for k in _flat_keys(Config) if is_semantic(k) and k not in CELL_FREE_KEYS)


def _param(runs: pd.DataFrame, key: str) -> pd.Series:
    column = f"params.{key}"
    if column in runs:
        return runs[column].astype(object)
    return pd.Series([None] * len(runs), index=runs.index, dtype=object)


def _tag(runs: pd.DataFrame, name: str) -> pd.Series:
    column = f"tags.{name}"
    if column in runs:
        return runs[column].astype(object).where(runs[column].notna(), None)
    return pd.Series([None] * len(runs), index=runs.index, dtype=object)


def axis_values(runs: pd.DataFrame, axis: str) -> pd.Series:
    """Return one axis value per run (object dtype, index aligned with ``runs``)."""
    if axis == "pretrained":
        return (
            _param(runs, "model.pretrained").map(lambda v: v not in (None, ""), na_action=None).astype(object)
        )
    if axis == "element_size":
        method, size = _param(runs, "regions.method"), _param(runs, "regions.region_size")
        return pd.Series(
            [1 if m == "pixel" else s for m, s in zip(method, size, strict=True)],
            index=runs.index,
            dtype=object,
        )
    if axis == "eval_dataset":
        tag, param, train = (
            _tag(runs, "eval_dataset"),
            _param(runs, "eval.dataset"),
            _param(runs, "data.name"),
        )
        values = [t or p or d for t, p, d in zip(tag, param, train, strict=True)]
        return pd.Series(values, index=runs.index, dtype=object)
    return _param(runs, axis)


def is_smoke(runs: pd.DataFrame) -> pd.Series:
    """True per run tagged ``smoke=true`` (a synthetic smoke sweep)."""
    return _tag(runs, "smoke").map(lambda v: str(v).lower() == "true").astype(bool)


#: Text axis values in the paper's order (datasets, decompositions, decoders, backbones); others follow A-Z.
VALUE_ORDER = {
    v: i
    for i, v in enumerate(
        (
            "cocostuff",
            "cityscapes",
            "synthetic",
            "pixel",
            "grid",
            "slic",
            "fpn",
            "deeplabv3plus",
            "resnet18",
            "resnet34",
            "resnet50",
            "resnet101",
        )
    )
}


def sort_key(key: Iterable[Any]) -> tuple[tuple[int, float, str], ...]:
    """Order axis-value tuples: None first, then numbers by value, then known words, then text A-Z."""

    def one(value: Any) -> tuple[int, float, str]:
        if value is None:
            return (0, 0.0, "")
        if isinstance(value, bool | int | float):
            return (1, float(value), "")
        if isinstance(value, tuple):  # a list param such as views.resize_range: by first element
            first = value[0] if value and isinstance(value[0], int | float) else 0.0
            return (1, float(first), str(value))
        text = str(value)
        return (2, float(VALUE_ORDER[text]), "") if text in VALUE_ORDER else (3, 0.0, text)

    return tuple(one(v) for v in key)


def group_runs(runs: pd.DataFrame, axes: Sequence[str]) -> dict[tuple[Any, ...], pd.DataFrame]:
    """Split runs into cells keyed by their axis values (keys in :func:`sort_key` order).

    Args:
        runs: the run frame (see :mod:`analysis.runs`).
        axes: the table's axes, e.g. ``("data.name", "views.view_size", "regions.method")``.

    Returns:
        ``{(value per axis, ...): runs of that cell}``.
    """
    if runs.empty:
        return {}
    values = pd.DataFrame({axis: axis_values(runs, axis) for axis in axes}, index=runs.index)
    keys = [tuple(row) for row in values.itertuples(index=False, name=None)]
    groups: dict[tuple[Any, ...], list[int]] = {}
    for position, key in enumerate(keys):
        groups.setdefault(key, []).append(position)
    ordered = sorted(groups, key=sort_key)
    return {key: runs.iloc[groups[key]] for key in ordered}


def describe_key(axes: Sequence[str], key: Sequence[Any]) -> str:
    """``"data.name=cityscapes, views.view_size=256"``: a cell named by its axis values."""
    return ", ".join(f"{a}={override_value(v)}" for a, v in zip(axes, key, strict=True))


def overrides(axes: Sequence[str], key: Sequence[Any]) -> list[str]:
    """The Hydra overrides that select a cell's configuration (derived axes turned back into keys)."""
    values = dict(zip(axes, key, strict=True))
    result: list[str] = []
    for axis, value in values.items():
        if axis == "pretrained":
            result.append("model.pretrained=<ImageNet ResNet weights>" if value else "model.pretrained=null")
        elif axis == "element_size":
            if values.get("regions.method") != "pixel":
                result.append(f"regions.region_size={override_value(value)}")
        elif axis == "eval_dataset":
            result.append(f"eval.dataset={override_value(value)}")
        else:
            result.append(f"{axis}={override_value(value)}")
    return result


def _distinct(values: Iterable[Any]) -> list[str]:
    return sorted(
        {"<unset>" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in values}
    )


def check_cell(runs: pd.DataFrame, axes: Sequence[str], cell: str) -> None:
    """Refuse to average runs that differ in anything but the seed and the non-semantic keys.

    Args:
        runs: the runs of one cell.
        axes: the table's axes (they are exempt: they are equal by construction).
        cell: how the message names the cell.

    Raises:
        MixedCellError: an evaluation tag or a semantic config key takes several values.
    """
    ids = ", ".join(sorted(runs["run_id"].astype(str))[:6])
    hint = (
        "cells are never averaged across them: select one with --sweep-id or --git-commit,"
        " or re-run the cell with one setting"
    )
    for name in UNIFORM_TAGS:
        if name in axes:
            continue
        values = _distinct(_tag(runs, name))
        if len(values) > 1:
            raise MixedCellError(f"cell {cell}: runs mix {name} = {values} (runs {ids}); {hint}")
    derived = [a for a in ("pretrained",) if a not in axes]
    for key in (*SEMANTIC_KEYS, *derived):
        if key in axes or (key in ("regions.region_size",) and "element_size" in axes):
            continue
        values = _distinct(axis_values(runs, key))
        if len(values) > 1:
            raise MixedCellError(f"cell {cell}: runs mix config {key} = {values} (runs {ids}); {hint}")


@dataclasses.dataclass(frozen=True)
class Summary:
    """Mean ± std over the seeds of a cell, in display units (percent for fractions).

    ``values`` are the seeds' own values (what a figure draws as dots); two summaries with the same mean,
    std and n compare equal whatever their values.
    """

    mean: float
    std: float
    n: int
    values: tuple[float, ...] = dataclasses.field(default=(), compare=False, repr=False)


def summarize(values: Iterable[float], scale: float = PERCENT) -> Summary | None:
    """Mean and sample std (ddof=1; 0 for one seed) of the non-NaN values, times ``scale``.

    Returns:
        ``None`` when no value is present.
    """
    array = np.asarray([v for v in values if v is not None], dtype=np.float64)
    array = array[~np.isnan(array)] * scale
    if array.size == 0:
        return None
    std = float(array.std(ddof=1)) if array.size > 1 else 0.0
    return Summary(mean=float(array.mean()), std=std, n=int(array.size), values=tuple(map(float, array)))


def metric(runs: pd.DataFrame, name: str) -> pd.Series:
    """A metric column (NaN where a run did not log it), e.g. ``metric(runs, "eval/linear_miou")``."""
    column = f"metrics.{name}"
    if column in runs:
        return runs[column].astype("float64")
    return pd.Series(np.nan, index=runs.index, dtype="float64")


def durations(runs: pd.DataFrame) -> pd.Series:
    """Active seconds per run: the sum of its attempts (:data:`ACTIVE_TIME_METRIC`).

    A run resumed after being dead does not count the dead interval. Runs logged before that metric
    existed fall back to wall-clock end - start; NaN while such a run has no end time.
    """
    start = pd.to_numeric(runs["start_time"], errors="coerce")
    end = pd.to_numeric(runs["end_time"], errors="coerce")
    wall = ((end - start) / 1000.0).astype("float64")
    return metric(runs, ACTIVE_TIME_METRIC).fillna(wall)


def seeds(runs: pd.DataFrame) -> list[Any]:
    """The distinct seeds of some runs, sorted."""
    return sorted({v for v in _param(runs, "seed") if v is not None}, key=lambda v: sort_key([v]))
