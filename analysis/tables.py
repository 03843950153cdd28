"""Tables 1-6 of the paper rebuilt from MLflow runs, with the paper's numbers beside ours.

Each ``build_table*`` takes the run frame of one experiment (every status; see
:func:`analysis.runs.load_runs`) and returns a :class:`analysis.render.Table`. Cells are keyed by the
table's axes (config keys), not by hard-coded paper configurations, so a smoke sweep that varies the
same axes on synthetic data gives the same layout with its own rows. Metrics are fractions in MLflow
and percent here.

Command line (``vice-tables`` or ``python -m analysis``)::

    vice-tables --tracking-uri sqlite:////abs/outputs/mlflow.db \\
        --experiment table3_decomposition --out outputs/tables
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from analysis import figures
from analysis.ablation import build_ablation
from analysis.cells import durations, metric, summarize
from analysis.layout import (
    Cell,
    collect_cells,
    dataset_label,
    decoder_label,
    gap_note,
    model_label,
    resolution_label,
    section_title,
    sections_in_order,
    shows_paper,
)
from analysis.paper import paper_rows, paper_table, parse_duration
from analysis.render import FLOORS, SMOKE_FOOTNOTE, Section, Stat, Table, Value, best_marks, render
from analysis.runs import load_runs
from vice.evaluate.run import LINEAR
from vice.launch.tracking.params import override_value

_FAMILY = re.compile(r"^metrics\.eval/(cluster(\d+)_(hungarian|majority)|linear)_miou$")
MARKERS = {"hungarian": "◇", "majority": "⋆"}
FLOOR = "floor"
FLOOR_NOTE = (
    "↳ random init, ↳ raw colours: floors from the same runs and evaluation as the result above"
    " (eval.baselines=true): the same network at random initialization, and k-means or a linear probe on"
    " raw pixel colours. Blank where the runs log no such floor. Never bold."
)


def _stat(runs: pd.DataFrame, name: str, cell: Cell, paper: float | None = None) -> Stat:
    return Stat(summarize(metric(runs, name)), paper=paper, smoke=cell.smoke)


def floor_metric(name: str, prefix: str) -> str:
    """The floor's metric of a model metric: ``eval/linear_miou`` -> ``eval/baseline_random_linear_miou``."""
    head, _, tail = name.partition("/")
    return f"{head}/{prefix}{tail}"


def floor_rows(values: Sequence[tuple[Cell, str | None]]) -> list[tuple[str, list[Value]]]:
    """The floor rows under one table row whose values are the model metrics ``(cell, name)``.

    Args:
        values: per column, the cell and the model metric it shows (``None`` for a text column).

    Returns:
        ``[(label, values), ...]`` in :data:`FLOORS` order, one per floor that some cell's runs log for
        its metric; a column whose runs do not log it is blank. Empty when no run logs a floor.
    """
    rows = []
    for label, prefix in FLOORS:
        row: list[Value] = []
        for cell, name in values:
            summary = summarize(metric(cell.runs, floor_metric(name, prefix))) if name else None
            row.append("" if summary is None else Stat(summary, smoke=cell.smoke, floor=True))
        if any(isinstance(v, Stat) for v in row):
            rows.append((label, row))
    return rows


def _bold(rows: list[list[Value]], positions: Sequence[tuple[int, int]]) -> None:
    """Bold the best of the Stats at ``(row, column)`` positions, in place (floors never compete)."""
    stats = [rows[r][c] for r, c in positions]
    means = [s.summary.mean if isinstance(s, Stat) and s.summary and not s.floor else None for s in stats]
    for (r, c), best in zip(positions, best_marks(means), strict=True):
        value = rows[r][c]
        if best and isinstance(value, Stat):
            rows[r][c] = dataclasses.replace(value, bold=True)


def _footnotes(
    gaps: Sequence[str], cells: Sequence[Cell], extra: Sequence[str] = (), floors: bool = False
) -> tuple[str, ...]:
    notes = list(gaps)
    if any(c.smoke for c in cells):
        notes.append(SMOKE_FOOTNOTE)
    notes += list(extra)
    if floors:
        notes.append(FLOOR_NOTE)
    return tuple(notes)


def _section_key(axes: Sequence[str], *names: str) -> Callable[[Cell], tuple[Any, ...]]:
    return lambda cell: tuple(cell.value(axes, n) for n in names)


# Table 1 ------------------------------------------------------------------------------------------

TABLE1_AXES = ("data.name", "views.view_size", "model.backbone", "model.decoder", "pretrained")


def eval_families(runs: pd.DataFrame) -> list[str]:
    """Evaluation families logged by some run: ``cluster27_hungarian``, ``cluster256_majority``, ``linear``.

    Ordered as the paper's sub-rows: by cluster count, optimal before greedy, the linear probe last.
    """
    found = []
    for column in runs.columns:
        match = _FAMILY.match(column)
        if match and runs[column].notna().any():
            found.append(match.group(1))
    return sorted(set(found), key=family_order)


def family_order(family: str) -> tuple[int, int, int]:
    """Sort key of an evaluation family (see :func:`eval_families`)."""
    match = re.match(r"cluster(\d+)_(hungarian|majority)", family)
    if match is None:
        return (1, 0, 0)
    return (0, int(match.group(1)), 0 if match.group(2) == "hungarian" else 1)


def family_label(family: str) -> str:
    """``cluster27_hungarian`` -> ``C 27◇`` (optimal), ``cluster256_majority`` -> ``C 256⋆`` (greedy)."""
    match = re.match(r"cluster(\d+)_(hungarian|majority)", family)
    if match is None:
        return "Linear"
    return f"C {match.group(1)}{MARKERS[match.group(2)]}"


def _generic_model(cell: Cell) -> str:
    size, backbone, decoder, pretrained = cell.key[1:]
    init = "" if pretrained else ", no pretrain"
    return f"ViCE ({resolution_label(size).lower()}-res, {model_label(backbone, decoder)}{init})"


def paper_only_rows(
    paper: Sequence[dict[str, Any]], dataset: Any
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A dataset's paper rows without a config of ours (other methods), split around the ViCE rows.

    Args:
        paper: Table 1's paper rows, in printed order.
        dataset: the section's ``data.name``.

    Returns:
        The rows printed before the dataset's first row with a config, and those printed after it.
    """
    rows = [p for p in paper if p["dataset"] == dataset]
    first = next((i for i, p in enumerate(rows) if p.get("config") is not None), len(rows))
    before = [p for p in rows[:first] if p.get("config") is None]
    after = [p for p in rows[first:] if p.get("config") is None]
    return before, after


@dataclasses.dataclass(frozen=True)
class _Table1Row:
    labels: tuple[str, str]
    values: list[Value]
    kind: str  # "cluster" or LINEAR: what the row's bold competes with; FLOOR: never bold
    vit: bool  # a ViT-based model: never bold (the paper bolds the best CNN result)


def _paper_only_row(entry: dict[str, Any]) -> _Table1Row:
    """A row of the paper's numbers only: ours is "—" (this repo does not run other methods)."""
    return _Table1Row(
        labels=(entry["model"], entry["eval"]),
        values=[Stat(None, paper=entry["miou"]), Stat(None, paper=entry["acc"])],
        kind=LINEAR if entry["eval_key"] == LINEAR else "cluster",
        vit=bool(entry["vit"]),
    )


def _paper_only_note(models: Sequence[str]) -> str:
    return (
        f"{', '.join(models)}: other methods as the paper reports them; this repo does not run them, so"
        " ours is —. * marks ViT-based models, which the bold leaves out (it compares CNN results)."
    )


def build_table1(runs: pd.DataFrame, experiment: str = "table1_main") -> Table:
    """Table 1: per dataset, the paper's rows in printed order, each ViCE model with its C K◇ / C K⋆ /
    Linear sub-rows; mIoU and Acc.

    Rows of other methods (no config of ours) show the paper's numbers only. The best CNN cluster result
    and the best linear result of each dataset are bold (mIoU and Acc apart). Under each ViCE model,
    its floors (``↳ random init``, ``↳ raw colours``) per evaluation family its runs log them for.
    """
    axes = TABLE1_AXES
    paper = paper_rows(1)
    cells = collect_cells(runs, axes, paper, experiment)
    with_paper = shows_paper(runs)
    sections, gaps, other_models = [], [], []
    has_floors = False
    for (dataset,), group in sections_in_order(cells, _section_key(axes, "data.name")).items():
        smoke = any(c.smoke for c in group)
        before, after = paper_only_rows(paper, dataset) if with_paper else ([], [])
        other_models += [p["model"] for p in (*before, *after)]
        rows = [_paper_only_row(p) for p in before]
        for cell in group:
            model = cell.paper[0]["model"] if cell.paper else _generic_model(cell)
            paper_by_family = {p["eval_key"]: p for p in cell.paper}
            families = sorted(set(paper_by_family) | set(eval_families(cell.runs)), key=family_order)
            where = f"{dataset_label(dataset, smoke)} / {model}"
            note = gap_note(cell, axes, experiment, where)
            gaps += [note] if note else []
            floors: dict[str, list[_Table1Row]] = {label: [] for label, _ in FLOORS}
            for family in families:
                entry = paper_by_family.get(family, {})
                miou = _stat(cell.runs, f"eval/{family}_miou", cell, entry.get("miou"))
                acc = _stat(cell.runs, f"eval/{family}_acc", cell, entry.get("acc"))
                if not cell.runs.empty and miou.summary is None:
                    gaps.append(
                        f"not evaluated: {where} / {family_label(family)}: its runs log no eval/{family}_miou"
                    )
                kind = LINEAR if family == LINEAR else "cluster"
                rows.append(_Table1Row((model, family_label(family)), [miou, acc], kind, vit=False))
                shown = [(cell, f"eval/{family}_miou"), (cell, f"eval/{family}_acc")]
                for label, floor in floor_rows(shown):
                    floors[label].append(_Table1Row((label, family_label(family)), floor, FLOOR, vit=False))
            rows += [row for label_rows in floors.values() for row in label_rows]
        rows += [_paper_only_row(p) for p in after]
        has_floors = has_floors or any(row.kind == FLOOR for row in rows)
        values = [row.values for row in rows]
        for kind in ("cluster", LINEAR):
            for column in (0, 1):
                _bold(values, [(r, column) for r, row in enumerate(rows) if row.kind == kind and not row.vit])
        sections.append(
            Section(
                title=dataset_label(dataset, smoke),
                labels=("Model", "Eval"),
                columns=("mIoU", "Acc."),
                rows=tuple((row.labels, tuple(value)) for row, value in zip(rows, values, strict=True)),
            )
        )
    notes = [_paper_only_note(list(dict.fromkeys(other_models)))] if other_models else []
    title = f"Table 1: {paper_table(1)['title']} (◇ optimal, ⋆ greedy cluster assignment)"
    return Table(experiment, title, tuple(sections), _footnotes(gaps, cells, notes, has_floors))


# Table 2 ------------------------------------------------------------------------------------------

TABLE2_AXES = ("data.name", "views.view_size", "model.backbone", "model.decoder")


def best_cluster(runs: pd.DataFrame) -> tuple[str | None, Stat]:
    """The cluster evaluation with the best seed-mean mIoU, and its Stat (``None`` family if none)."""
    best: tuple[str | None, Stat] = (None, Stat(None))
    for family in eval_families(runs):
        if family == LINEAR:
            continue
        summary = summarize(metric(runs, f"eval/{family}_miou"))
        current = best[1].summary
        if summary is not None and (current is None or round(summary.mean, 6) > round(current.mean, 6)):
            best = (family, Stat(summary))
    return best


def build_table2(runs: pd.DataFrame, experiment: str = "table2_resolution") -> Table:
    """Table 2: the best model per dataset and resolution; best cluster mIoU (its C named) and linear mIoU.

    Under each row, its floors: the same cluster evaluation (same C and assignment) and linear probe.
    """
    axes = TABLE2_AXES
    cells = collect_cells(runs, axes, paper_rows(2), experiment)
    rows: list[list[Value]] = []
    labels: list[tuple[str, ...]] = []
    datasets: list[Any] = []  # per row; None for a floor row (never bold)
    gaps = []
    for cell in cells:
        dataset, size, backbone, decoder = cell.key
        paper = cell.paper[0] if cell.paper else {}
        family, cluster = best_cluster(cell.runs)
        cluster = dataclasses.replace(cluster, paper=paper.get("cluster_miou"), smoke=cell.smoke)
        linear = _stat(cell.runs, "eval/linear_miou", cell, paper.get("linear_miou"))
        label = (dataset_label(dataset, cell.smoke), resolution_label(size), model_label(backbone, decoder))
        note = gap_note(cell, axes, experiment, " / ".join(label))
        gaps += [note] if note else []
        labels.append(label)
        rows.append([cluster, linear, family_label(family) if family else ""])
        datasets.append(dataset)
        shown = [(cell, f"eval/{family}_miou" if family else None), (cell, "eval/linear_miou"), (cell, None)]
        for floor_label, values in floor_rows(shown):
            labels.append((*label[:2], floor_label))
            rows.append(values)
            datasets.append(None)
    for dataset in dict.fromkeys(d for d in datasets if d is not None):
        for column in (0, 1):
            _bold(rows, [(r, column) for r, d in enumerate(datasets) if d == dataset])
    section = Section(
        title="",
        labels=("Dataset", "Resolution", "Configuration"),
        columns=("Cluster mIoU", "Linear mIoU", "Best C"),
        rows=tuple((lab, tuple(row)) for lab, row in zip(labels, rows, strict=True)),
    )
    floors = None in datasets
    notes = [
        "Cluster mIoU: the cluster evaluation (C and assignment in 'Best C') with the best mean over seeds"
        + ("; its floors are that same evaluation." if floors else ".")
    ]
    title = f"Table 2: {paper_table(2)['title']}"
    return Table(experiment, title, (section,), _footnotes(gaps, cells, notes, floors))


# Table 3 ------------------------------------------------------------------------------------------

TABLE3_AXES = (
    "data.name",
    "views.view_size",
    "regions.method",
    "element_size",
    "views.mask_ratio",
    "model.decoder",
)
METHOD_LABELS = {"pixel": "", "grid": "grid ", "slic": "super "}


def decomposition_label(cell: Cell) -> str:
    """``FPN super 10px``, ``DLV3+ grid 20px``, ``FPN 1px``; `` +mask 25%`` when regions are masked."""
    _, _, method, size, mask, decoder = cell.key
    text = f"{decoder_label(decoder)} {METHOD_LABELS.get(str(method), f'{method} ')}{size}px"
    return text + (f" +mask {override_value(round(float(mask) * 100))}%" if mask else "")


def build_table3(runs: pd.DataFrame, experiment: str = "table3_decomposition") -> Table:
    """Table 3, as printed: per resolution a column per decomposition; rows linear mIoU and training time.

    The floors of the mIoU row (``↳ random init``, ``↳ raw colours``) follow it.
    """
    axes = TABLE3_AXES
    cells = collect_cells(runs, axes, paper_rows(3), experiment)
    sections, gaps = [], []
    has_floors = False
    for (dataset, size), group in sections_in_order(
        cells, _section_key(axes, "data.name", "views.view_size")
    ).items():
        smoke = any(c.smoke for c in group)
        title = section_title(dataset, size, smoke)
        columns, miou, time = [], [], []
        for cell in group:
            paper = cell.paper[0] if cell.paper else {}
            name = paper.get("column") or decomposition_label(cell)
            note = gap_note(cell, axes, experiment, f"{title} / {name}")
            gaps += [note] if note else []
            columns.append(name)
            miou.append(_stat(cell.runs, "eval/linear_miou", cell, paper.get("miou")))
            paper_time = paper.get("time")
            time.append(
                Stat(
                    summarize(durations(cell.runs), scale=1.0),
                    paper=parse_duration(paper_time) if paper_time else None,
                    paper_text=paper_time,
                    kind="duration",
                    smoke=cell.smoke,
                )
            )
        floors = floor_rows([(cell, "eval/linear_miou") for cell in group])
        has_floors = has_floors or bool(floors)
        rows: list[list[Value]] = [list(miou), *(values for _, values in floors), list(time)]
        _bold(rows, [(0, c) for c in range(len(columns))])
        names = ["mIoU", *(label for label, _ in floors), "Time"]
        sections.append(
            Section(
                title=title,
                labels=("",),
                columns=tuple(columns),
                rows=tuple(((name,), tuple(row)) for name, row in zip(names, rows, strict=True)),
            )
        )
    notes = [
        "mIoU: linear probe. Time: per training run, the sum of its active attempts (a resumed run's dead"
        " interval left out), our hardware."
    ]
    title = f"Table 3: {paper_table(3)['title']}"
    return Table(experiment, title, tuple(sections), _footnotes(gaps, cells, notes, has_floors))


# Table 4 ------------------------------------------------------------------------------------------

TABLE4_AXES = ("data.name", "eval_dataset")


def build_table4(runs: pd.DataFrame, experiment: str = "table4_domain") -> Table:
    """Table 4: training domain x evaluation domain, linear mIoU and pixel accuracy.

    Under each row, its floors on the same evaluation domain, named in the training-domain column
    (a floor is trained on nothing).
    """
    axes = TABLE4_AXES
    cells = collect_cells(runs, axes, paper_rows(4), experiment)
    rows: list[list[Value]] = []
    labels, gaps = [], []
    competing: list[int] = []  # rows that compete for the bold (not floors)
    for cell in cells:
        train, evaluated = cell.key
        paper = cell.paper[0] if cell.paper else {}
        label = (dataset_label(train, cell.smoke), dataset_label(evaluated, cell.smoke))
        note = gap_note(cell, axes, experiment, " → ".join(label))
        gaps += [note] if note else []
        labels.append(label)
        competing.append(len(rows))
        rows.append(
            [
                _stat(cell.runs, "eval/linear_miou", cell, paper.get("miou")),
                _stat(cell.runs, "eval/linear_acc", cell, paper.get("acc")),
            ]
        )
        for floor_label, values in floor_rows([(cell, "eval/linear_miou"), (cell, "eval/linear_acc")]):
            labels.append((floor_label, label[1]))
            rows.append(values)
    for column in (0, 1):
        _bold(rows, [(r, column) for r in competing])
    section = Section(
        title="",
        labels=("Training data domain", "Evaluation data domain"),
        columns=("mIoU", "aAcc"),
        rows=tuple((lab, tuple(row)) for lab, row in zip(labels, rows, strict=True)),
    )
    title = f"Table 4: {paper_table(4)['title']}"
    floors = len(competing) < len(rows)
    return Table(experiment, title, (section,), _footnotes(gaps, cells, floors=floors))


# Table 5 ------------------------------------------------------------------------------------------

HPARAM_NAMES = {
    "views.view_size": "view size",
    "views.mask_ratio": "mask coverage",
    "swav.num_prototypes": "K",
    "swav.queue_length": "queue",
    "views.num_views": "views",
    "model.embed_dim": "D",
    "views.resize_range": "resize range",
}
TABLE5_AXES = ("data.name", *HPARAM_NAMES)


def baseline_index(keys: Sequence[tuple[Any, ...]], preferred: tuple[Any, ...] | None = None) -> int:
    """The baseline of a one-change-at-a-time study: ``preferred`` if present, else the key with the
    fewest differing values summed over all other keys (the first such key on ties)."""
    if preferred is not None and preferred in keys:
        return list(keys).index(preferred)
    distances = [sum(sum(a != b for a, b in zip(k, other, strict=True)) for other in keys) for k in keys]
    return distances.index(min(distances))


def change_label(baseline: tuple[Any, ...], key: tuple[Any, ...]) -> str:
    """``mask coverage 0.5 → 0.25; D 64 → 128``: what a row changes from the baseline."""
    changes = [
        f"{HPARAM_NAMES[axis]} {override_value(old)} → {override_value(new)}"
        for axis, old, new in zip(TABLE5_AXES[1:], baseline[1:], key[1:], strict=True)
        if old != new
    ]
    return "; ".join(changes) or "baseline"


def _relative(stat: Stat, base: Stat) -> str:
    if stat.summary is None or base.summary is None:
        return ""
    diff = stat.summary.mean - base.summary.mean
    relative = 100.0 * diff / base.summary.mean if base.summary.mean else float("nan")
    return f"{diff:+.2f} ({relative:+.1f}%)"


def build_table5(runs: pd.DataFrame, experiment: str = "table5_hparams") -> Table:
    """Table 5: each one-parameter change from the baseline, its linear mIoU and Δ mIoU (sorted by Δ).

    Under each row, its linear-probe floor (``↳ random init``), which has no Δ.
    """
    axes = TABLE5_AXES
    entry = paper_table(5)
    baseline_config = {k: tuple(v) if isinstance(v, list) else v for k, v in entry["baseline"].items()}
    paper_baseline = [{"config": baseline_config}]
    cells = collect_cells(runs, axes, paper_baseline, experiment)
    sections, gaps = [], []
    has_floors = False
    for (dataset,), group in sections_in_order(cells, _section_key(axes, "data.name")).items():
        smoke = any(c.smoke for c in group)
        preferred = tuple(baseline_config.get(a) for a in axes)
        base_cell = group[baseline_index([c.key for c in group], preferred)]
        stats = {id(c): _stat(c.runs, "eval/linear_miou", c) for c in group}
        base = stats[id(base_cell)]
        entries = []
        for cell in group:
            label = "baseline" if cell is base_cell else change_label(base_cell.key, cell.key)
            note = gap_note(cell, axes, experiment, f"{dataset_label(dataset, smoke)} / {label}")
            gaps += [note] if note else []
            stat = stats[id(cell)]
            diff = stat.summary.mean - base.summary.mean if stat.summary and base.summary else None
            order = (0 if cell is base_cell else 1, diff is None, -(diff or 0.0), label)
            delta = _relative(stat, base) if cell is not base_cell else ""
            entries.append((order, label, stat, delta, cell))
        entries.sort(key=lambda e: e[0])
        rows: list[list[Value]] = []
        labels: list[str] = []
        competing: list[int] = []  # rows that compete for the bold (not floors)
        for _, label, stat, delta, cell in entries:
            competing.append(len(rows))
            labels.append(label)
            rows.append([stat, delta])
            for floor_label, values in floor_rows([(cell, "eval/linear_miou"), (cell, None)]):
                labels.append(floor_label)
                rows.append(values)
        has_floors = has_floors or len(competing) < len(rows)
        _bold(rows, [(r, 0) for r in competing])
        baseline_text = ", ".join(
            f"{HPARAM_NAMES[a]} {override_value(v)}" for a, v in zip(axes[1:], base_cell.key[1:], strict=True)
        )
        sections.append(
            Section(
                title=f"{dataset_label(dataset, smoke)}; baseline: {baseline_text}",
                labels=("Experiment",),
                columns=("mIoU", "Δ mIoU"),
                rows=tuple(((label,), tuple(row)) for label, row in zip(labels, rows, strict=True)),
            )
        )
    paper_deltas = ", ".join(entry["delta_miou"])
    notes = [
        "mIoU: linear probe. Baseline: the paper's Appendix B configuration when present, else the"
        " configuration every other row differs from in one key.",
        f"Paper Δ mIoU, rows unreadable in the source: {paper_deltas}.",
    ]
    title = f"Table 5: {entry['title']}"
    return Table(experiment, title, tuple(sections), _footnotes(gaps, cells, notes, has_floors))


# Table 6 ------------------------------------------------------------------------------------------

TABLE6_AXES = ("data.name", "model.embed_dim", "swav.num_prototypes")


def build_table6(runs: pd.DataFrame, experiment: str = "table6_dk") -> Table:
    """Table 6, as printed: one row of linear mIoU, one column per (D, K); its floor (``↳ random init``) below."""
    axes = TABLE6_AXES
    cells = collect_cells(runs, axes, paper_rows(6), experiment)
    sections, gaps = [], []
    has_floors = False
    for (dataset,), group in sections_in_order(cells, _section_key(axes, "data.name")).items():
        smoke = any(c.smoke for c in group)
        columns, values = [], []
        for cell in group:
            name = f"({cell.key[1]}, {cell.key[2]})"
            note = gap_note(cell, axes, experiment, f"{dataset_label(dataset, smoke)} / (D, K) = {name}")
            gaps += [note] if note else []
            columns.append(name)
            values.append(
                _stat(cell.runs, "eval/linear_miou", cell, cell.paper[0]["miou"] if cell.paper else None)
            )
        floors = floor_rows([(cell, "eval/linear_miou") for cell in group])
        has_floors = has_floors or bool(floors)
        rows: list[list[Value]] = [list(values), *(row for _, row in floors)]
        _bold(rows, [(0, c) for c in range(len(columns))])
        names = ["mIoU", *(label for label, _ in floors)]
        sections.append(
            Section(
                title=dataset_label(dataset, smoke),
                labels=("(D, K)",),
                columns=tuple(columns),
                rows=tuple(((name,), tuple(row)) for name, row in zip(names, rows, strict=True)),
            )
        )
    title = f"Table 6: {paper_table(6)['title']}"
    notes = ["mIoU: linear probe."]
    return Table(experiment, title, tuple(sections), _footnotes(gaps, cells, notes, has_floors))


# Experiments, rendering and the command line --------------------------------------------------------

TABLES: dict[str, Callable[[pd.DataFrame, str], Table]] = {
    "table1_main": build_table1,
    "table2_resolution": build_table2,
    "table3_decomposition": build_table3,
    "table4_domain": build_table4,
    "table5_hparams": build_table5,
    "table6_dk": build_table6,
}
KNOWN_EXPERIMENTS = (*TABLES, *figures.FIGURES)


def resolve_experiment(name: str) -> str:
    """The paper experiment an MLflow experiment belongs to: its exact name, or the one it contains
    (``table3_decomposition_smoke`` -> ``table3_decomposition``).

    Raises:
        KeyError: no or several paper experiments match (the message lists them).
    """
    if name in KNOWN_EXPERIMENTS:
        return name
    matches = [known for known in KNOWN_EXPERIMENTS if known in name]
    if len(matches) != 1:
        raise KeyError(
            f"experiment {name!r} names none of the paper experiments {', '.join(KNOWN_EXPERIMENTS)}"
        )
    return matches[0]


def is_paper_experiment(name: str) -> bool:
    """Whether ``name`` is (or contains the name of) one of the paper's tables or figures."""
    try:
        resolve_experiment(name)
    except KeyError:
        return False
    return True


def build_experiment(runs: pd.DataFrame, experiment: str, tracking_uri: str | None = None) -> Table:
    """The table of one experiment; for a figure experiment, the table of the plotted data.

    An experiment of our own (not the paper's) gets the generic table of :mod:`analysis.ablation`.
    """
    if not is_paper_experiment(experiment):
        return build_ablation(runs, experiment)
    canonical = resolve_experiment(experiment)
    if canonical in TABLES:
        return TABLES[canonical](runs, experiment)
    return figures.figure_table(
        figures.figure_data(runs, canonical, tracking_uri, experiment), canonical, experiment
    )


def render_experiment(
    tracking_uri: str,
    experiment: str,
    *,
    sweep_id: str | None = None,
    git_commit: str | None = None,
    fmt: str = "markdown",
    compare: bool = False,
) -> str:
    """Regenerate one experiment's table from MLflow and return it as text.

    Args:
        tracking_uri: the MLflow tracking URI the sweep logged to.
        experiment: the MLflow experiment (``table3_decomposition``; names that contain a paper
            experiment's name, such as ``table3_decomposition_smoke``, also work).
        sweep_id: only runs of this sweep.
        git_commit: only runs at this commit (a prefix works).
        fmt: ``markdown``, ``latex`` or ``csv``.
        compare: show ``paper | ours | Δ`` for every numeric column.

    Raises:
        LookupError: the experiment is not in the store.
        MixedCellError: a cell would average runs of different protocols, datasets or configs.
    """
    runs = load_runs(tracking_uri, [experiment], sweep_id=sweep_id, git_commit=git_commit)
    return render(build_experiment(runs, experiment, tracking_uri), fmt, compare)


@dataclasses.dataclass(frozen=True)
class ExperimentOutputs:
    """What :func:`write_experiment` produced: the Markdown text and the files written."""

    markdown: str
    files: tuple[Path, ...]
    figure: Path


def write_experiment(
    tracking_uri: str,
    experiment: str,
    out_dir: Path,
    *,
    sweep_id: str | None = None,
    git_commit: str | None = None,
    compare: bool = False,
) -> ExperimentOutputs:
    """Write ``{experiment}.md``, ``.tex``, ``.csv`` and the figure (``.png``, ``.pdf``, ``_plot.csv``).

    Table experiments get a bar chart of their cells; figure experiments get the paper's figure.
    """
    runs = load_runs(tracking_uri, [experiment], sweep_id=sweep_id, git_commit=git_commit)
    canonical = resolve_experiment(experiment) if is_paper_experiment(experiment) else None
    out_dir.mkdir(parents=True, exist_ok=True)
    if canonical is None:
        table = build_ablation(runs, experiment)
    elif canonical in TABLES:
        table = TABLES[canonical](runs, experiment)
    else:
        data = figures.figure_data(runs, canonical, tracking_uri, experiment)
        table = figures.figure_table(data, canonical, experiment)
    texts = {
        "md": render(table, "markdown", compare),
        "tex": render(table, "latex", compare),
        "csv": render(table, "csv"),
    }
    files = []
    for suffix, text in texts.items():
        path = out_dir / f"{experiment}.{suffix}"
        path.write_text(text, encoding="utf-8")
        files.append(path)
    stem = out_dir / experiment
    if canonical is None or canonical in TABLES:
        plotted = figures.plot_table(table, stem)
    else:
        plotted = figures.plot_figure(data, canonical, stem)
    return ExperimentOutputs(markdown=texts["md"], files=(*files, *plotted), figure=plotted[0])
