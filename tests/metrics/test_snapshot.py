"""Losses measured from the snapshot, against counts made by hand."""

import math

import pytest
import torch

from halluc_cl.metrics.snapshot import SnapshotReferenced, lasting


def _t(*bits):
    return torch.tensor([bool(b) for b in bits])


def test_counts_and_rates_by_hand():
    # 6 facts: right at the snapshot 1,1,1,1,0,0; right now 1,0,0,1,1,0
    m = SnapshotReferenced()
    m.update(_t(1, 1, 1), _t(1, 0, 0))  # two updates: the sums carry over
    m.update(_t(1, 0, 0), _t(1, 1, 0))
    out = m.compute()
    assert out["snapshot_acc"] == pytest.approx(4 / 6)
    assert out["snapshot_loss"] == pytest.approx((4 - 3) / 6)  # acc 4/6 -> 3/6
    assert out["snapshot_loss_rel"] == pytest.approx(1 / 4)
    assert (out["forgotten"], out["gained"]) == (2, 1)
    assert out["forgotten_rate"] == pytest.approx(2 / 4)
    assert out["gained_rate"] == pytest.approx(1 / 2)
    # the identity: loss = (forgotten - gained) / n
    assert out["snapshot_loss"] == pytest.approx((out["forgotten"] - out["gained"]) / 6)


def test_undefined_rates_are_nan_and_reset_clears():
    m = SnapshotReferenced()
    m.update(_t(1, 1), _t(1, 1))
    out = m.compute()
    assert out["snapshot_loss"] == 0.0 and math.isnan(out["gained_rate"])  # none was wrong
    m.reset()
    m.update(_t(0), _t(1))
    assert m.compute()["snapshot_loss"] == -1.0 and math.isnan(m.compute()["forgotten_rate"])


def test_lasting_is_the_mean_of_the_last_window():
    assert lasting([0.4, 0.1, 0.2, 0.3], window=3) == pytest.approx(0.2)
    assert lasting([0.2], window=3) == pytest.approx(0.2)  # fewer than the window: all
    assert math.isnan(lasting([], window=3))
