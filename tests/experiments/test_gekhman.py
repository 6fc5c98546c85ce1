"""Gekhman et al.'s regression over every evaluation, on histories made by hand."""

import numpy as np
import pytest

from halluc_cl.experiments.gekhman import epoch_points, regression


def _summary(accs: list[tuple[float, float | None, float | None]]) -> dict:
    """A cell whose warm-up ends at epoch 0, then one evaluation per ``(test acc, kn, unk)``."""
    history = [{"epoch": 0, "heldout_test_acc": 1.0, "known_train_acc": 0.3,
                "new_fact_acc": 0.0}]
    for e, (acc, kn, unk) in enumerate(accs, start=1):
        h = {"epoch": e, "heldout_test_acc": acc}
        h.update({k: v for k, v in (("known_train_acc", kn), ("new_fact_acc", unk))
                  if v is not None})
        history.append(h)
    return {"warmup_end": history[0], "history": history}


def test_points_skip_the_warmup_and_weight_by_the_mix():
    points = epoch_points(_summary([(0.9, 1.0, 0.5), (0.8, 0.5, 1.0)]), unknown_fraction=0.25)
    # (1 − X)·kn, X·unk, 100·acc
    assert np.asarray(points) == pytest.approx(np.array([(0.75, 0.125, 90.0),
                                                         (0.375, 0.25, 80.0)]))
    # X = 0: no Unknown split in the mix, its share is 0
    zero = epoch_points(_summary([(0.9, 1.0, None)]), 0.0)
    assert np.asarray(zero) == pytest.approx(np.array([(1.0, 0.0, 90.0)]))


def test_exact_plane_is_recovered_with_tight_intervals():
    # acc (points) = 50 + 20·N_kn/|D| − 30·N_unk/|D|, exactly, over 6 cells
    rng = np.random.default_rng(1)
    cells = []
    for x in (0.0, 0.25, 0.5, 0.75, 0.9, 0.5):
        rows = []
        for _ in range(4):
            kn, unk = rng.uniform(0.5, 1.0), rng.uniform(0.0, 1.0)
            rows.append((kn, unk, None))
        accs = [((50 + 20 * (1 - x) * kn - 30 * x * unk) / 100, kn, unk if x > 0 else None)
                for kn, unk, _ in rows]
        cells.append(epoch_points(_summary(accs), x))
    fit = regression(cells, samples=200)
    assert fit.coef == pytest.approx((50.0, 20.0, -30.0), abs=1e-6)
    assert fit.r2 == pytest.approx(1.0) and (fit.points, fit.cells) == (24, 6)
    for c, lo, hi in zip(fit.coef, fit.low, fit.high):
        assert lo - 1e-6 <= c <= hi + 1e-6 and hi - lo < 1e-6  # every resample fits exactly


def test_noise_widens_the_intervals_and_one_fraction_is_not_identifiable():
    rng = np.random.default_rng(2)
    cells = []
    for x in (0.0, 0.25, 0.5, 0.75, 0.9) * 2:
        accs = []
        for _ in range(5):
            kn, unk = rng.uniform(0.5, 1.0), rng.uniform(0.0, 1.0)
            acc = (60 + 10 * (1 - x) * kn - 20 * x * unk + rng.normal(0, 2)) / 100
            accs.append((acc, kn, unk if x > 0 else None))
        cells.append(epoch_points(_summary(accs), x))
    fit = regression(cells, samples=300)
    assert fit.low[1] < 10 < fit.high[1] and fit.low[2] < -20 < fit.high[2]
    assert fit.high[2] < 0 < fit.low[1]  # the signs are resolved
    assert all(hi - lo > 0.1 for lo, hi in zip(fit.low, fit.high))
    # every point at X = 0.5 with kn = unk: the two shares are collinear
    same = [epoch_points(_summary([(0.9, 0.8, 0.8), (0.8, 0.6, 0.6)]), 0.5)] * 3
    assert regression(same) is None
