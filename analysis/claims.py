"""The paper's claims as data, tested on the runs over their seeds (``vice-tables --claims``).

Each :class:`Claim` is a sentence of the paper written as a comparison over the cells of a table or
figure, the cells being those of :mod:`analysis.tables` / :mod:`analysis.figures` (the same axes). A
claim never names a paper configuration, only relations between cells, so a smoke sweep that varies
the same axes on synthetic data is tested by the same claims:

- ``contrast``: a cell matching ``higher`` beats a cell matching ``lower`` that agrees with it on every
  other axis (``free`` axes may differ too), e.g. ``regions.method == slic`` over ``regions.method == grid``;
- ``trend``: along ``axis``, each cell beats (``sign=+1``) or trails (``sign=-1``) the cell of the next
  smaller value that agrees with it on every other axis, e.g. D 64 -> 128 -> 256 at each K;
- ``peak``: along ``axis``, the best interior value beats both ends (at least 3 values).

Every pair of cells is one :func:`analysis.stats.compare` of the expected-higher against the
expected-lower cell (effect in mIoU percentage points; positive when the claim holds), beside the
paper's own difference where the paper prints both cells. A claim's verdict is
:func:`analysis.stats.overall_verdict` of its pairs; a claim with no pair in the selection is untestable.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import math
import operator
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from analysis import stats
from analysis.cells import METRIC, PERCENT, metric, sort_key
from analysis.figures import FIGURES
from analysis.layout import Cell, collect_cells
from analysis.paper import paper_rows
from analysis.render import SMOKE_FOOTNOTE, SMOKE_MARK
from analysis.runs import load_runs
from analysis.tables import (
    TABLE2_AXES,
    TABLE3_AXES,
    TABLE4_AXES,
    TABLE5_AXES,
    TABLE6_AXES,
    is_paper_experiment,
    resolve_experiment,
)
from vice.launch.tracking.params import override_value

#: ``(axis, operator, value)``: a condition a cell's axis value must meet.
Condition = tuple[str, str, Any]
OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
CONTRAST, TREND, PEAK = "contrast", "trend", "peak"


@dataclasses.dataclass(frozen=True)
class Claim:
    """One claim of the paper as a comparison over a table's cells (see the module docstring).

    Attributes:
        id: a stable name, ``table3_superpixels_beat_grid``.
        experiment: the paper experiment whose cells it compares (``table3_decomposition``).
        source: where the paper makes it (``Table 3``).
        text: the claim in words.
        quote: the paper's sentence.
        kind: ``contrast``, ``trend`` or ``peak``.
        higher, lower: contrast only: the conditions of the expected-higher and expected-lower cells.
        free: contrast only: axes besides those of ``higher``/``lower`` on which the two cells may differ.
        axis: trend and peak: the axis along which cells are compared.
        sign: trend only: +1 when the metric should rise along ``axis``, -1 when it should fall.
        where: conditions every compared cell meets.
    """

    id: str
    experiment: str
    source: str
    text: str
    quote: str
    kind: str
    higher: tuple[Condition, ...] = ()
    lower: tuple[Condition, ...] = ()
    free: tuple[str, ...] = ()
    axis: str = ""
    sign: int = 1
    where: tuple[Condition, ...] = ()


LOW, HIGH = 256, 512
CLAIMS = (
    Claim(
        "table2_high_resolution_helps",
        "table2_resolution",
        "Table 2",
        "the best high-resolution model beats the best low-resolution model of its dataset",
        "Table 2 shows that the best high-resolution models improves on the best low-resolution models",
        CONTRAST,
        higher=(("views.view_size", "==", HIGH),),
        lower=(("views.view_size", "==", LOW),),
        free=("model.backbone", "model.decoder"),
    ),
    Claim(
        "table3_superpixels_beat_grid",
        "table3_decomposition",
        "Table 3",
        "superpixels beat grid cells of the same base element size",
        "The final column shows how superpixels are better than grids with equivalent base element sizes.",
        CONTRAST,
        higher=(("regions.method", "==", "slic"),),
        lower=(("regions.method", "==", "grid"),),
    ),
    Claim(
        "table3_grid_beats_pixels",
        "table3_decomposition",
        "Table 3",
        "grid decomposition beats no decomposition (1 px elements)",
        "The third and fourth column shows gains from applying grid and superpixel region decomposition.",
        CONTRAST,
        higher=(("regions.method", "==", "grid"),),
        lower=(("regions.method", "==", "pixel"),),
        free=("element_size",),
    ),
    Claim(
        "table3_masking_helps",
        "table3_decomposition",
        "Table 3",
        "region masking beats no masking",
        "The second columns indicate gains from random masking.",
        CONTRAST,
        higher=(("views.mask_ratio", ">", 0.0),),
        lower=(("views.mask_ratio", "==", 0.0),),
    ),
    Claim(
        "table3_fpn_at_low_resolution",
        "table3_decomposition",
        "Table 3",
        "at low resolution the FPN decoder beats DeepLabV3+",
        "utilizing the more complex DLV3+ decoder is detrimental in the case of low-resolution images",
        CONTRAST,
        higher=(("model.decoder", "==", "fpn"),),
        lower=(("model.decoder", "==", "deeplabv3plus"),),
        where=(("views.view_size", "<=", LOW),),
    ),
    Claim(
        "table3_dlv3_at_high_resolution",
        "table3_decomposition",
        "Table 3",
        "at high resolution DeepLabV3+ beats the FPN decoder",
        "The third column demonstrates the importance of utilizing a high-resolution decoder.",
        CONTRAST,
        higher=(("model.decoder", "==", "deeplabv3plus"),),
        lower=(("model.decoder", "==", "fpn"),),
        where=(("views.view_size", ">=", HIGH),),
    ),
    Claim(
        "table4_general_domain_helps",
        "table4_domain",
        "Table 4",
        "training on COCO beats training on Cityscapes, evaluated on the same domain",
        "Training on COCO and evaluating on Cityscapes with a linear model increases performance from 30.40"
        " to 34.14 (+3.74) mIoU",
        CONTRAST,
        higher=(("data.name", "==", "cocostuff"),),
        lower=(("data.name", "==", "cityscapes"),),
    ),
    Claim(
        "table5_masking_helps",
        "table5_hparams",
        "Table 5",
        "modest masking beats no masking",
        "The results indicate that modest masking proves to be better than no masking.",
        CONTRAST,
        higher=(("views.mask_ratio", ">", 0.0),),
        lower=(("views.mask_ratio", "==", 0.0),),
    ),
    Claim(
        "table5_more_views_help",
        "table5_hparams",
        "Table 5",
        "more views per image help",
        "Increasing the number of views improves representation learning",
        TREND,
        axis="views.num_views",
    ),
    Claim(
        "table5_larger_d_helps",
        "table5_hparams",
        "Table 5",
        "a larger embedding dimension D helps",
        "Larger embedding size D results in more expressive embeddings.",
        TREND,
        axis="model.embed_dim",
    ),
    Claim(
        "table6_larger_d_helps",
        "table6_dk",
        "Table 6",
        "at each K, a larger embedding dimension D helps",
        "Increasing D consistently results in better performance.",
        TREND,
        axis="model.embed_dim",
    ),
    Claim(
        "table6_k_beyond_128_hurts",
        "table6_dk",
        "Table 6",
        "at each D, more than 128 prototypes hurts",
        "increasing K beyond 128 prototypes leads to worse results, at least for the same amount of training"
        " iterations",
        TREND,
        axis="swav.num_prototypes",
        sign=-1,
        where=(("swav.num_prototypes", ">=", 128),),
    ),
    Claim(
        "fig5_superpixels_beat_grid",
        "fig5_element_size",
        "Fig. 5",
        "superpixels beat grid cells at every base element size",
        "The left plot in Fig. 5 demonstrates consistent gains from using superpixels instead of grids.",
        CONTRAST,
        higher=(("regions.method", "==", "slic"),),
        lower=(("regions.method", "==", "grid"),),
    ),
    Claim(
        "fig5_element_size_sweet_spot",
        "fig5_element_size",
        "Fig. 5",
        "an interior base element size beats the smallest and the largest (the best interior size is"
        " picked by its mean, so its intervals are optimistic)",
        "The result indicates that there exists a sweet spot for base element size in terms of effective"
        " learning.",
        PEAK,
        axis="element_size",
    ),
    Claim(
        "fig7_deeper_backbone_helps",
        "fig7_backbone",
        "Fig. 7",
        "a deeper ResNet helps (COCO, and any dataset but Cityscapes)",
        "Our results on COCO indicate that performance per epoch consistently improves with increased"
        " backbone complexity.",
        TREND,
        axis="model.backbone",
        where=(("data.name", "!=", "cityscapes"),),
    ),
    Claim(
        "fig7_deeper_backbone_hurts_on_cityscapes",
        "fig7_backbone",
        "Fig. 7",
        "on Cityscapes a deeper ResNet hurts",
        "In contrast, the results on Cityscapes indicate worse performance.",
        TREND,
        axis="model.backbone",
        sign=-1,
        where=(("data.name", "==", "cityscapes"),),
    ),
)

#: Per paper experiment with claims: its table's axes and the paper rows whose ``config`` names cells.
EXPERIMENTS: dict[str, tuple[tuple[str, ...], Callable[[], list[dict[str, Any]]]]] = {
    "table2_resolution": (TABLE2_AXES, lambda: paper_rows(2)),
    "table3_decomposition": (TABLE3_AXES, lambda: paper_rows(3)),
    "table4_domain": (TABLE4_AXES, lambda: paper_rows(4)),
    "table5_hparams": (TABLE5_AXES, list),
    "table6_dk": (TABLE6_AXES, lambda: paper_rows(6)),
    "fig5_element_size": (FIGURES["fig5_element_size"].axes, list),
    "fig7_backbone": (FIGURES["fig7_backbone"].axes, list),
}


def claims_of(experiment: str) -> tuple[Claim, ...]:
    """The claims tested on an experiment (a smoke experiment gets those of its paper experiment)."""
    canonical = resolve_experiment(experiment)
    return tuple(c for c in CLAIMS if c.experiment == canonical)


def meets(conditions: Sequence[Condition], axes: Sequence[str], key: Sequence[Any]) -> bool:
    """Whether a cell's axis values meet every condition (a missing or unordered value never does)."""
    values = dict(zip(axes, key, strict=True))
    for axis, op, target in conditions:
        value = values.get(axis)
        try:
            if value is None or not OPERATORS[op](value, target):
                return False
        except TypeError:
            return False
    return True


def _without(axes: Sequence[str], key: Sequence[Any], drop: Collection[str]) -> tuple[Any, ...]:
    return tuple(v for a, v in zip(axes, key, strict=True) if a not in drop)


def _seed_mean(cell: Cell) -> float:
    values = metric(cell.runs, METRIC).dropna()
    return float(values.mean()) if len(values) else math.nan


def pairs(claim: Claim, cells: Sequence[Cell], axes: Sequence[str]) -> list[tuple[Cell, Cell]]:
    """The ``(expected higher, expected lower)`` pairs of cells a claim compares, in cell order."""
    cells = [c for c in cells if meets(claim.where, axes, c.key)]
    found: list[tuple[Cell, Cell]] = []
    if claim.kind == CONTRAST:
        free = {a for a, _, _ in (*claim.higher, *claim.lower)} | set(claim.free)
        for high in (c for c in cells if meets(claim.higher, axes, c.key)):
            for low in (c for c in cells if meets(claim.lower, axes, c.key)):
                if high is not low and _without(axes, high.key, free) == _without(axes, low.key, free):
                    found.append((high, low))
        return found
    lines: dict[tuple[Any, ...], list[Cell]] = {}
    for cell in cells:
        lines.setdefault(_without(axes, cell.key, [claim.axis]), []).append(cell)
    position = list(axes).index(claim.axis)
    for line in lines.values():
        line.sort(key=lambda c: sort_key([c.key[position]]))
        if claim.kind == TREND:
            for smaller, larger in itertools.pairwise(line):
                found.append((larger, smaller) if claim.sign > 0 else (smaller, larger))
        elif claim.kind == PEAK and len(line) >= 3:
            interior = [c for c in line[1:-1] if not math.isnan(_seed_mean(c))]
            if interior:
                best = max(interior, key=_seed_mean)
                found += [(best, line[0]), (best, line[-1])]
    return found


def _paper_value(cell: Cell) -> float | None:
    for entry in cell.paper:
        value = entry.get("linear_miou", entry.get("miou"))
        if value is not None:
            return float(value)
    return None


def _side(axes: Sequence[str], key: Sequence[Any], shared: set[str]) -> str:
    return ", ".join(f"{a}={override_value(v)}" for a, v in zip(axes, key, strict=True) if a not in shared)


@dataclasses.dataclass(frozen=True)
class PairResult:
    """One pair of cells of a claim, tested: the values are percent mIoU over seeds."""

    context: str
    higher: str
    lower: str
    higher_values: tuple[float, ...]
    lower_values: tuple[float, ...]
    comparison: stats.Comparison
    paper_higher: float | None
    paper_lower: float | None
    smoke: bool

    @property
    def paper_effect(self) -> float | None:
        """The paper's expected-higher minus expected-lower, where it prints both cells."""
        if self.paper_higher is None or self.paper_lower is None:
            return None
        return round(self.paper_higher - self.paper_lower, 6)


@dataclasses.dataclass(frozen=True)
class ClaimResult:
    """A claim tested on one selection: its pairs and its overall verdict."""

    claim: Claim
    experiment: str
    pairs: tuple[PairResult, ...]

    @property
    def verdict(self) -> str:
        """See :func:`analysis.stats.overall_verdict`."""
        return stats.overall_verdict([p.comparison.verdict for p in self.pairs])


def compare_cells(high: Cell, low: Cell, axes: Sequence[str]) -> PairResult:
    """Compare two cells' linear mIoU over seeds (percent), beside the paper's values."""
    shared = {a for a, u, v in zip(axes, high.key, low.key, strict=True) if u == v}
    a = tuple(float(v) * PERCENT for v in metric(high.runs, METRIC).dropna())
    b = tuple(float(v) * PERCENT for v in metric(low.runs, METRIC).dropna())
    context = ", ".join(
        f"{x}={override_value(v)}" for x, v in zip(axes, high.key, strict=True) if x in shared
    )
    return PairResult(
        context=context,
        higher=_side(axes, high.key, shared),
        lower=_side(axes, low.key, shared),
        higher_values=a,
        lower_values=b,
        comparison=stats.compare(a, b),
        paper_higher=_paper_value(high),
        paper_lower=_paper_value(low),
        smoke=high.smoke or low.smoke,
    )


def evaluate_claims(runs: pd.DataFrame, experiment: str) -> list[ClaimResult]:
    """Test every claim of an experiment on its runs (every status; see :func:`analysis.runs.load_runs`).

    Args:
        runs: the selection (one sweep, a commit, or the whole experiment).
        experiment: the MLflow experiment (``table3_decomposition_smoke`` works).

    Raises:
        MixedCellError: a cell would pool runs of different protocols or configs.
    """
    if not is_paper_experiment(experiment):  # a sweep of our own (learning_photos) makes no paper claim
        return []
    canonical = resolve_experiment(experiment)
    if canonical not in EXPERIMENTS:
        return []
    axes, paper = EXPERIMENTS[canonical]
    cells = collect_cells(runs, axes, paper(), experiment)
    results = []
    for claim in claims_of(canonical):
        tested = tuple(compare_cells(high, low, axes) for high, low in pairs(claim, cells, axes))
        results.append(ClaimResult(claim, experiment, tested))
    return results


# Reports -----------------------------------------------------------------------------------------

CLAIMS_CSV_COLUMNS = (
    "experiment",
    "claim",
    "source",
    "claim_verdict",
    "context",
    "higher",
    "lower",
    "n_higher",
    "mean_higher",
    "std_higher",
    "n_lower",
    "mean_lower",
    "std_lower",
    "effect",
    "ci_low",
    "ci_high",
    "df",
    "verdict",
    "seeds_needed",
    "paper_higher",
    "paper_lower",
    "paper_effect",
    "smoke",
)


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    series = pd.Series(values, dtype="float64")
    if series.empty:
        return math.nan, math.nan
    return float(series.mean()), float(series.std(ddof=1)) if len(series) > 1 else 0.0


def _number(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.{digits}f}"


def claims_csv(results: Sequence[ClaimResult]) -> str:
    """One row per tested pair (a claim without a pair gets one row with its verdict only); percent."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CLAIMS_CSV_COLUMNS)
    for result in results:
        head = [result.experiment, result.claim.id, result.claim.source, result.verdict]
        if not result.pairs:
            writer.writerow([*head, *[""] * (len(CLAIMS_CSV_COLUMNS) - len(head))])
        for pair in result.pairs:
            c = pair.comparison
            (mean_a, std_a), (mean_b, std_b) = _mean_std(pair.higher_values), _mean_std(pair.lower_values)
            writer.writerow(
                [
                    *head,
                    pair.context,
                    pair.higher,
                    pair.lower,
                    c.n_a,
                    _number(mean_a),
                    _number(std_a),
                    c.n_b,
                    _number(mean_b),
                    _number(std_b),
                    _number(c.effect),
                    _number(c.low),
                    _number(c.high),
                    _number(c.df),
                    c.verdict,
                    "" if c.seeds_needed is None else c.seeds_needed,
                    _number(pair.paper_higher, 2),
                    _number(pair.paper_lower, 2),
                    _number(pair.paper_effect, 2),
                    str(pair.smoke).lower(),
                ]
            )
    return out.getvalue()


def _ours(values: Sequence[float], smoke: bool) -> str:
    mean, std = _mean_std(values)
    mark = SMOKE_MARK if smoke else ""
    if not values:
        return "—"
    if len(values) == 1:
        return f"{mean:.2f} (1){mark}"
    return f"{mean:.2f} ± {std:.2f} ({len(values)}){mark}"


def settle_text(comparison: stats.Comparison) -> str:
    """What would settle a pair: seeds per cell for an inconclusive one, ``≥ 2 seeds`` for an untestable one."""
    if comparison.verdict == stats.UNTESTABLE:
        return f"≥ {stats.MIN_SEEDS} seeds per cell"
    if comparison.verdict != stats.INCONCLUSIVE:
        return ""
    if comparison.seeds_needed is not None:
        return f"{comparison.seeds_needed} seeds per cell"
    if comparison.effect == 0.0:
        return "none (Δ = 0)"
    return f"> {stats.MAX_SEEDS} seeds per cell"


def _pair_row(pair: PairResult) -> str:
    c = pair.comparison
    interval = "" if math.isnan(c.low) else f"[{c.low:+.2f}, {c.high:+.2f}]"
    effect = "" if math.isnan(c.effect) else f"{c.effect:+.2f}"
    paper = "n/a" if pair.paper_effect is None else f"{pair.paper_effect:+.2f}"
    cells = [
        pair.context,
        pair.higher,
        pair.lower,
        _ours(pair.higher_values, pair.smoke),
        _ours(pair.lower_values, pair.smoke),
        effect,
        interval,
        c.verdict,
        settle_text(c),
        paper,
    ]
    return "| " + " | ".join(text.replace("|", "\\|") for text in cells) + " |"


def claims_markdown(results: Sequence[ClaimResult], experiment: str) -> str:
    """The claims report: per claim its verdict, the paper's sentence, and a row per pair of cells."""
    lines = [f"# The paper's claims on {experiment}", ""]
    if not results:
        lines += [f"No claim of the paper is written for {experiment} (see analysis/claims.py).", ""]
        return "\n".join(lines)
    lines += [
        "Δ: expected-higher minus expected-lower linear mIoU (percentage points), mean over seeds; positive"
        f" when the claim holds. Interval: Welch {round(stats.LEVEL * 100)} %. Verdict: supported when the"
        " interval is above 0, contradicted when below, inconclusive when it spans 0, untestable when a cell"
        f" has fewer than {stats.MIN_SEEDS} seeds. Seeds to settle: seeds per cell for"
        f" {round(stats.POWER * 100)} % power at the observed Δ and spreads. Paper Δ: the same difference"
        " in the paper's numbers.",
        "",
    ]
    header = (
        "| context | expected higher | expected lower | higher mIoU | lower mIoU | Δ | 95 % interval"
        " | verdict | to settle | paper Δ |"
    )
    for result in results:
        claim = result.claim
        lines += [f"## {claim.source}: {claim.text}: **{result.verdict}**", "", f"> {claim.quote}", ""]
        if not result.pairs:
            lines += ["No pair of cells in this selection compares it.", ""]
            continue
        lines += [header, "|" + " --- |" * 10, *(_pair_row(p) for p in result.pairs), ""]
    if any(p.smoke for r in results for p in r.pairs):
        lines += [SMOKE_FOOTNOTE, ""]
    return "\n".join(lines)


def summary_metrics(results: Sequence[ClaimResult]) -> dict[str, float]:
    """Per claim, its verdict count as MLflow metrics: ``claims/supported`` ... over all claims."""
    counts = {f"claims/{v}": 0.0 for v in stats.VERDICTS}
    for result in results:
        counts[f"claims/{result.verdict}"] += 1.0
    return counts


@dataclasses.dataclass(frozen=True)
class ClaimsOutputs:
    """What :func:`write_claims` produced."""

    markdown: str
    files: tuple[Path, ...]
    results: tuple[ClaimResult, ...]


def write_claims(
    tracking_uri: str,
    experiment: str,
    out_dir: Path,
    *,
    sweep_id: str | None = None,
    git_commit: str | None = None,
) -> ClaimsOutputs:
    """Test an experiment's claims on a selection and write ``{experiment}_claims.md`` and ``.csv``.

    Raises:
        LookupError: the experiment is not in the store.
        MixedCellError: a cell would pool runs of different protocols or configs.
    """
    runs = load_runs(tracking_uri, [experiment], sweep_id=sweep_id, git_commit=git_commit)
    results = tuple(evaluate_claims(runs, experiment))
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown = claims_markdown(results, experiment)
    md, table = out_dir / f"{experiment}_claims.md", out_dir / f"{experiment}_claims.csv"
    md.write_text(markdown, encoding="utf-8")
    table.write_text(claims_csv(results), encoding="utf-8")
    return ClaimsOutputs(markdown, (md, table), results)
