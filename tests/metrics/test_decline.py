"""Peak and relative decline (metrics/decline.py): hand-computed expectations, the functional
form and the Metric agreeing, and the Metric restored from a fit's history."""

from __future__ import annotations

import pytest
import torch

from halluc_cl.metrics.decline import PeakDecline, peak_and_decline, relative_decline
from halluc_cl.metrics.drift import RepresentationDrift, cosine_drift


@pytest.mark.parametrize("peak, final, expected", [
    (0.8, 0.6, 0.25),
    (0.5, 0.5, 0.0),
    (0.4, 0.0, 1.0),
    (0.8, 1.0, -0.25),
    (0.0, 0.3, 0.0),
])
def test_relative_decline(peak, final, expected):
    assert relative_decline(peak, final) == pytest.approx(expected)


def test_test_peak_is_read_at_the_validation_peak():
    evals = [{"heldout_val_acc": 0.8, "heldout_test_acc": 0.7},
             {"heldout_val_acc": 0.9, "heldout_test_acc": 0.6},  # val peaks here
             {"heldout_val_acc": 0.9, "heldout_test_acc": 0.9},  # a tie: the first one counts
             {"heldout_val_acc": 0.45, "heldout_test_acc": 0.3}]
    out = peak_and_decline(evals)
    assert out["heldout_val_peak"] == 0.9 and out["heldout_val_decline"] == pytest.approx(0.5)
    # the test reference is the test accuracy at the val peak, not the test maximum (0.9)
    assert out["heldout_test_peak"] == 0.6 and out["heldout_test_decline"] == pytest.approx(0.5)
    # no validation split: the test split's own maximum
    alone = peak_and_decline([{"heldout_test_acc": a} for a in (0.5, 0.8, 0.6)])
    assert alone == {"heldout_test_peak": 0.8, "heldout_test_decline": pytest.approx(0.25)}


def test_the_metric_gives_the_functional_forms_numbers():
    evals = [(0.8, 0.7), (0.9, 0.6), (0.9, 0.9), (0.45, 0.3)]
    metric = PeakDecline()
    for i, (val, test) in enumerate(evals):
        metric.update(val, test)
        expected = peak_and_decline([{"heldout_val_acc": v, "heldout_test_acc": t}
                                     for v, t in evals[:i + 1]])
        assert metric.compute() == expected  # exactly: the states are float64
    assert metric.compute()["heldout_test_decline"] == pytest.approx(0.5)
    metric.reset()
    metric.update(None, 0.5)
    metric.update(None, 0.8)
    metric.update(None, 0.6)
    assert metric.compute() == {"heldout_test_peak": 0.8,
                                "heldout_test_decline": pytest.approx(0.25)}


def test_a_split_missing_from_one_evaluation_has_no_peak():
    metric = PeakDecline()
    metric.update(0.7, 0.6)
    metric.update(None, 0.5)  # this evaluation had no validation split
    assert metric.compute() == {"heldout_test_peak": 0.6,
                                "heldout_test_decline": pytest.approx(1 / 6)}


def test_float32_accuracies_keep_their_exact_values():
    acc = float(torch.tensor(7 / 9, dtype=torch.float32))  # as the module logs them
    metric = PeakDecline()
    metric.update(acc, acc)
    assert metric.compute()["heldout_val_peak"] == acc


def test_drift_metric_is_the_mean_over_every_update():
    ref = torch.eye(3)
    now = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, -1.0]])
    metric = RepresentationDrift()
    metric.update(now[:1], ref[:1])
    metric.update(now[1:], ref[1:])
    assert metric.compute().item() == pytest.approx((0.0 + 1.0 + 2.0) / 3)
    assert metric.compute() == cosine_drift(now, ref)
    with pytest.raises(ValueError, match="one shape"):
        metric.update(now[:2], ref)



def test_no_evaluation_yet_is_no_peak():
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert PeakDecline().compute() == {}
