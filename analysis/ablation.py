"""The table of a sweep that is not one of the paper's: one row per swept setting, with the floors.

An ablation sweep of our own (``sweeps/experiment/learning_photos.yaml``: what makes the trainer learn)
has no paper layout. Its cells are the semantic settings that differ between its runs; each row shows
the linear probe and every cluster count (Hungarian where C = classes, majority above), the same
network at random init and raw colours under it, and the model's gain over random init.
"""

from __future__ import annotations

import re

import pandas as pd

from analysis.cells import SEMANTIC_KEYS, axis_values, is_smoke, metric, summarize
from analysis.render import FLOORS, SMOKE_FOOTNOTE, Section, Stat, Table, Value
from analysis.runs import select_latest_finished

_CLUSTER = re.compile(r"^metrics\.eval/cluster(\d+)_(hungarian|majority)_miou$")
#: Label of the row that differs from no axis's most common value.
COMMON = "the common setting"


def swept_axes(runs: pd.DataFrame) -> list[str]:
    """The semantic settings (other than the seed) that take more than one value across ``runs``."""
    axes = []
    for key in SEMANTIC_KEYS:
        if key == "seed" or f"params.{key}" not in runs:
            continue
        if axis_values(runs, key).astype(str).nunique() > 1:
            axes.append(key)
    return axes


def metric_columns(runs: pd.DataFrame) -> list[tuple[str, str]]:
    """``(column title, metric stem)``: the linear probe, then every cluster count the runs logged."""
    clusters = sorted(
        {(int(m.group(1)), m.group(2)) for c in runs.columns if (m := _CLUSTER.match(c))},
        key=lambda cm: (cm[0], cm[1] != "hungarian"),
    )
    columns = [("linear", "linear_miou")]
    columns += [(f"C = {c} {mapping}", f"cluster{c}_{mapping}_miou") for c, mapping in clusters]
    return columns


def build_ablation(runs: pd.DataFrame, experiment: str) -> Table:
    """One section: a row per cell of the swept settings, floors under it, and the gain row.

    A row is labelled by the settings in which it differs from the most common value of each axis
    (in a one-change-at-a-time ablation: its one change); the row that differs nowhere is
    "the common setting".
    """
    finished = select_latest_finished(runs)
    axes = swept_axes(finished)
    columns = metric_columns(finished)
    smoke = bool(len(finished)) and bool(is_smoke(finished).all())
    rows: list[tuple[tuple[str, ...], tuple[Value, ...]]] = []
    modes = {a: axis_values(finished, a).astype(str).mode().iloc[0] for a in axes}
    labelled = []
    if axes:
        for key, group in finished.groupby([axis_values(finished, a).astype(str) for a in axes], sort=True):
            values = key if isinstance(key, tuple) else (key,)
            label = ", ".join(f"{a}={v}" for a, v in zip(axes, values, strict=True) if v != modes[a])
            labelled.append((label, group))
    else:
        labelled.append(("", finished))
    labelled.sort(key=lambda entry: (entry[0] != "", entry[0]))  # the common setting first
    for label, group in labelled:
        rows.append(((label or COMMON,), tuple(_stat(group, f"eval/{stem}", smoke) for _, stem in columns)))
        for floor_label, prefix in FLOORS:
            values = tuple(_stat(group, f"eval/{prefix}{stem}", smoke, floor=True) for _, stem in columns)
            rows.append(((floor_label,), values))
        gains = tuple(_stat(group, f"eval/gain_{stem}", smoke, floor=True) for _, stem in columns)
        rows.append((("↳ gain over random init",), gains))
    section = Section(
        title=f"{experiment}: {', '.join(axes) or 'one setting'} (mIoU %, mean ± std (seeds))",
        labels=("setting",),
        columns=tuple(title for title, _ in columns),
        rows=tuple(rows),
    )
    footnotes = (SMOKE_FOOTNOTE,) if smoke else ()
    return Table(name=experiment, title=f"Ablation {experiment}", sections=(section,), footnotes=footnotes)


def _stat(runs: pd.DataFrame, name: str, smoke: bool, floor: bool = False) -> Stat:
    values = metric(runs, name) if f"metrics.{name}" in runs else []
    return Stat(summarize(values), smoke=smoke, floor=floor)
