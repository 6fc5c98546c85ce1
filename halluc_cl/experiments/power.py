"""How many seeds or facts a paired comparison needs to show its effect (``scipy.stats``):
the answer a reviewer asks for when a difference is not significant.

- **Seeds**: the smallest number of seeds at which the paired t-test of per-seed differences
  (two-sided, level ``alpha``) rejects with probability ``power``, if the true mean and
  standard deviation of the differences are the ones observed (noncentral t).
- **Facts**: the smallest number of shared facts (right at both runs' snapshots, pooled over
  seeds) at which the exact McNemar test rejects at level ``alpha`` with probability
  ``power``, if each fact is forgotten under one run only with the observed rates.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

POWER, SEED_ALPHA, FACT_ALPHA = 0.8, 0.05, 0.01
MAX_SEEDS, MAX_FACTS = 1000, 10_000_000


def t_power(mean: float, sd: float, n: int, alpha: float = SEED_ALPHA) -> float:
    """Power of the two-sided one-sample t-test of ``n`` differences (noncentral t).

    >>> round(t_power(1.0, 1.0, 10), 3)  # Cohen's d = 1: 10 pairs give 80 %
    0.803
    """
    if n < 2:
        return 0.0
    crit = stats.t.ppf(1 - alpha / 2, n - 1)
    shift = mean / sd * math.sqrt(n)
    return float(stats.nct.sf(crit, n - 1, shift) + stats.nct.cdf(-crit, n - 1, shift))


def seeds_needed(mean: float, sd: float, alpha: float = SEED_ALPHA,
                 power: float = POWER) -> int | None:
    """The fewest seeds with ``t_power`` ≥ ``power``; ``None`` for no effect or over
    ``MAX_SEEDS``.

    >>> seeds_needed(1.0, 1.0)
    10
    """
    if mean == 0 or not sd > 0:
        return None if mean == 0 else 2
    return next((n for n in range(2, MAX_SEEDS + 1) if t_power(mean, sd, n, alpha) >= power),
                None)


def mcnemar_power(rate_a: float, rate_b: float, facts: int, alpha: float = FACT_ALPHA) -> float:
    """Power of the exact two-sided McNemar test over ``facts`` shared facts, each forgotten
    under A only with probability ``rate_a`` and under B only with ``rate_b``.

    >>> round(mcnemar_power(0.5, 0.0, 10, alpha=0.05), 6)  # rejects once 6 or more differ
    0.376953
    """
    discordant = rate_a + rate_b
    if facts < 1 or discordant <= 0:
        return 0.0
    d = np.arange(facts + 1)
    # reject when 2·P(Bin(d, ½) ≤ min(k, d − k)) < alpha: k ≤ c or k ≥ d − c
    c = stats.binom.ppf(alpha / 2, d, 0.5) - 1
    share = rate_a / discordant
    low = np.where(c >= 0, stats.binom.cdf(c, d, share), 0.0)
    high = np.where(c >= 0, stats.binom.sf(d - c - 1, d, share), 0.0)
    return float(np.sum(stats.binom.pmf(d, facts, discordant) * np.minimum(low + high, 1.0)))


def facts_needed(only_a: int, only_b: int, shared: int, alpha: float = FACT_ALPHA,
                 power: float = POWER) -> int | None:
    """The fewest shared facts at which ``mcnemar_power`` at the observed rates
    (``only_a / shared``, ``only_b / shared``) reaches ``power``; ``None`` for equal counts
    or over ``MAX_FACTS``.

    >>> facts_needed(30, 10, 200), facts_needed(15, 10, 200)  # 30 / 10 of 200: p = 0.002
    (238, 2400)
    """
    if shared < 1 or only_a == only_b:
        return None
    rates = (only_a / shared, only_b / shared)
    high = 1
    while mcnemar_power(*rates, high, alpha) < power:
        high *= 2
        if high > MAX_FACTS:
            return None
    low = high // 2
    while high - low > max(1, high // 200):  # to within 0.5 %: exact tests are not monotone
        mid = (low + high) // 2
        low, high = (low, mid) if mcnemar_power(*rates, mid, alpha) >= power else (mid, high)
    return high
