"""Is setting A better than setting B? Welch's t-test on two groups of seeds (unequal variances),
with the confidence interval of the difference of means. The statistic and its degrees of
freedom are Welch's formulas; the t distribution is scipy's."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

LEVEL = 0.95  # the confidence interval the reports print


@dataclass(frozen=True)
class Welch:
    difference: float  # mean(a) - mean(b)
    low: float  # LEVEL confidence interval of the difference
    high: float
    p_value: float  # two-sided: the chance of a difference this large if the means were equal
    df: float  # Welch-Satterthwaite degrees of freedom
    n_a: int
    n_b: int


def welch_test(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> Welch | None:
    """Welch's two-sample t-test of mean(a) - mean(b); None when a group has under two values
    or neither group varies (the test is then undefined, not 'significant')."""
    from scipy.stats import t as student_t

    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    if va + vb == 0:
        return None
    difference = statistics.fmean(a) - statistics.fmean(b)
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = float(student_t.ppf(0.5 + level / 2, df)) * se
    p = 2 * float(student_t.sf(abs(difference) / se, df))
    return Welch(difference, difference - half, difference + half, p, df, len(a), len(b))
