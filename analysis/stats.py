"""The statistics of a comparison between two cells over their seeds: Welch interval, verdict, seeds needed.

A comparison asks whether cell A's metric is above cell B's. Its effect is ``mean(A) - mean(B)`` over
seeds; its 95 % interval is Welch's (unequal variances, Welch-Satterthwaite degrees of freedom), the
interval that ``scipy.stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)`` gives. The
verdict reads the interval: above 0 is *supported*, below 0 *contradicted*, across 0 *inconclusive*.
A cell with fewer than :data:`MIN_SEEDS` seeds has no variance to test against: *untestable*, never
supported. For an inconclusive comparison, :func:`seeds_needed` is the number of seeds per cell at which
a two-sided Welch test at the same level would detect the observed effect with :data:`POWER` power,
if the observed effect and spreads were the truth.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as sps

LEVEL = 0.95
POWER = 0.8
MIN_SEEDS = 2
#: Largest number of seeds :func:`seeds_needed` searches; above it the answer is "more than this".
MAX_SEEDS = 1000
SUPPORTED = "supported"
CONTRADICTED = "contradicted"
INCONCLUSIVE = "inconclusive"
UNTESTABLE = "untestable"
VERDICTS = (SUPPORTED, CONTRADICTED, INCONCLUSIVE, UNTESTABLE)


@dataclasses.dataclass(frozen=True)
class Comparison:
    """A vs B over seeds, in the units of the values (percent mIoU in the reports).

    Attributes:
        effect: ``mean(a) - mean(b)``; NaN when a side has no value.
        low, high: the Welch interval of the effect at :data:`LEVEL`; NaN when untestable.
        df: Welch-Satterthwaite degrees of freedom; NaN when untestable (inf when both spreads are 0).
        n_a, n_b: seeds per side.
        verdict: one of :data:`VERDICTS`.
        seeds_needed: for an inconclusive comparison, seeds per cell that would settle it at the observed
            effect (``None`` when the effect is 0 or more than :data:`MAX_SEEDS` seeds are needed; always
            ``None`` for another verdict).
    """

    effect: float
    low: float
    high: float
    df: float
    n_a: int
    n_b: int
    verdict: str
    seeds_needed: int | None


def _clean(values: Sequence[float] | np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    return array[~np.isnan(array)]


def welch_interval(a: np.ndarray, b: np.ndarray, level: float = LEVEL) -> tuple[float, float, float]:
    """Welch's interval of ``mean(a) - mean(b)``.

    Args:
        a: (n_a,) values of A, n_a >= 2.
        b: (n_b,) values of B, n_b >= 2.
        level: the coverage, e.g. 0.95.

    Returns:
        ``(low, high, df)``. When both sample variances are 0 the interval is the point effect and df is
        inf (no spread: every seed agrees).
    """
    effect = float(a.mean() - b.mean())
    va, vb = float(a.var(ddof=1)) / a.size, float(b.var(ddof=1)) / b.size
    se = math.sqrt(va + vb)
    if se == 0.0:
        return effect, effect, math.inf
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    half = float(sps.t.ppf(0.5 + level / 2.0, df)) * se
    return effect - half, effect + half, df


def welch_power(effect: float, sd_a: float, sd_b: float, n: int, level: float = LEVEL) -> float:
    """Power of a two-sided Welch test with ``n`` seeds per cell, if ``effect`` and the spreads are true.

    Uses the noncentral t with the Welch-Satterthwaite degrees of freedom at equal ``n``
    (``(n - 1) (sd_a² + sd_b²)² / (sd_a⁴ + sd_b⁴)``, which is ``2n - 2`` for equal spreads, Student's test).
    """
    var = sd_a**2 + sd_b**2
    if var == 0.0:
        return 1.0 if effect != 0.0 else 1.0 - level
    df = (n - 1) * var**2 / (sd_a**4 + sd_b**4)
    ncp = effect / math.sqrt(var / n)
    critical = float(sps.t.ppf(0.5 + level / 2.0, df))
    power = float(sps.nct.sf(critical, df, ncp) + sps.nct.cdf(-critical, df, ncp))
    if math.isnan(power):  # scipy's noncentral t fails far in the tail: the normal limit is exact there
        power = float(sps.norm.sf(critical - ncp) + sps.norm.cdf(-critical - ncp))
    return power


def seeds_needed(
    effect: float, sd_a: float, sd_b: float, level: float = LEVEL, power: float = POWER
) -> int | None:
    """The fewest seeds per cell at which :func:`welch_power` reaches ``power`` (at least :data:`MIN_SEEDS`).

    Returns:
        ``None`` when the effect is 0 (no number of seeds settles it) or more than :data:`MAX_SEEDS` are
        needed.
    """
    if effect == 0.0 or math.isnan(effect):
        return None
    high = MIN_SEEDS  # power rises with n: double until it reaches the target, then bisect
    while welch_power(effect, sd_a, sd_b, high, level) < power:
        if high >= MAX_SEEDS:
            return None
        high = min(2 * high, MAX_SEEDS)
    low = max(MIN_SEEDS, high // 2)
    while low < high:
        middle = (low + high) // 2
        if welch_power(effect, sd_a, sd_b, middle, level) >= power:
            high = middle
        else:
            low = middle + 1
    return low


def compare(
    a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, level: float = LEVEL
) -> Comparison:
    """Compare A with B over their seeds (NaN values are dropped).

    Args:
        a: (n_a,) one value per seed of A.
        b: (n_b,) one value per seed of B.
        level: the interval's coverage.

    Returns:
        The :class:`Comparison`; untestable when a side has fewer than :data:`MIN_SEEDS` values.
    """
    xa, xb = _clean(a), _clean(b)
    effect = float(xa.mean() - xb.mean()) if xa.size and xb.size else math.nan
    if xa.size < MIN_SEEDS or xb.size < MIN_SEEDS:
        return Comparison(effect, math.nan, math.nan, math.nan, xa.size, xb.size, UNTESTABLE, None)
    low, high, df = welch_interval(xa, xb, level)
    if low > 0.0:
        verdict = SUPPORTED
    elif high < 0.0:
        verdict = CONTRADICTED
    else:
        verdict = INCONCLUSIVE
    needed = None
    if verdict == INCONCLUSIVE:
        needed = seeds_needed(effect, float(xa.std(ddof=1)), float(xb.std(ddof=1)), level)
    return Comparison(effect, low, high, df, int(xa.size), int(xb.size), verdict, needed)


def overall_verdict(verdicts: Sequence[str]) -> str:
    """One verdict for a claim tested on several pairs of cells.

    Contradicted if any pair is; supported only if every pair is; untestable if no pair is testable
    (or there is none); inconclusive otherwise (some pair is inconclusive or untestable).
    """
    if CONTRADICTED in verdicts:
        return CONTRADICTED
    if verdicts and all(v == SUPPORTED for v in verdicts):
        return SUPPORTED
    if all(v == UNTESTABLE for v in verdicts):
        return UNTESTABLE
    return INCONCLUSIVE
