"""Power of the paired tests, against values computed by hand and by simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from halluc_cl.experiments.power import facts_needed, mcnemar_power, seeds_needed, t_power


def test_mcnemar_power_by_hand():
    # 10 facts, each forgotten under A only with probability 1/2, never under B only: the
    # test (alpha 0.05) rejects when 6 or more differ, all under A: P(Bin(10, 1/2) >= 6)
    assert mcnemar_power(0.5, 0.0, 10, alpha=0.05) == pytest.approx(386 / 1024)
    assert mcnemar_power(0.1, 0.1, 500) < 0.02  # no effect: about the level, never more


def test_mcnemar_power_matches_a_simulation():
    rng = np.random.default_rng(0)
    rates, facts, trials = (0.12, 0.05), 300, 4000
    draws = rng.multinomial(facts, [*rates, 1 - sum(rates)], size=trials)
    rejects = [stats.binomtest(int(a), int(a + b), 0.5).pvalue < 0.01 if a + b else False
               for a, b, _ in draws]
    assert mcnemar_power(*rates, facts) == pytest.approx(np.mean(rejects), abs=0.025)


def test_t_power_and_seeds_needed():
    assert t_power(1.0, 1.0, 10) == pytest.approx(0.8031, abs=1e-3)  # Cohen's d = 1, n = 10
    assert seeds_needed(1.0, 1.0) == 10 and seeds_needed(-1.0, 1.0) == 10
    assert seeds_needed(0.5, 1.0) == 34  # d = 0.5: 34 pairs (G*Power)
    assert seeds_needed(0.0, 1.0) is None


def test_facts_needed_is_where_the_power_crosses():
    n = facts_needed(30, 10, 200)
    assert mcnemar_power(0.15, 0.05, n) >= 0.8 > mcnemar_power(0.15, 0.05, math.floor(n * 0.95))
    assert facts_needed(10, 10, 200) is None
