"""Hallucination metrics over several updates, with hand-computed counts."""

from __future__ import annotations

import math

import pytest
import torch

from halluc_cl.metrics.hallucination import (
    AbstainRate,
    ExactMatchAccuracy,
    HallucinationRate,
)

T, F = True, False


def _b(*values: bool) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.bool)


# two batches; per fact: (reference_correct, now_correct, abstained)
BATCH_1 = {"reference_correct": _b(T, T, F, T, T), "now_correct": _b(T, F, F, F, F),
           "abstained": _b(F, F, F, T, F)}
BATCH_2 = {"reference_correct": _b(T, F, T, F), "now_correct": _b(F, T, T, F),
           "abstained": _b(F, F, F, T)}
# reference-correct facts: batch 1 -> idx 0, 1, 3, 4 (4); batch 2 -> idx 0, 2 (2): 6 in all
# hallucinated (ref right, now wrong, not abstained): b1 idx 1, 4; b2 idx 0 -> 3
# abstained (ref right, now wrong, abstained): b1 idx 3 -> 1; (b2 idx 3 has ref wrong)


def test_exact_match_accuracy_over_updates():
    m = ExactMatchAccuracy()
    m.update(_b(T, F, T))
    m.update(_b(F))
    m.update(torch.tensor([1, 1, 0, 1]))  # integer 0/1 tensors count too
    assert int(m.correct) == 5 and int(m.total) == 8
    assert m.compute().item() == pytest.approx(5 / 8)


def test_exact_match_accuracy_nan_when_empty():
    m = ExactMatchAccuracy()
    m.update(torch.zeros(0, dtype=torch.bool))
    assert math.isnan(m.compute().item())


def test_hallucination_rate_over_updates():
    m = HallucinationRate()
    m.update(**BATCH_1)
    assert m.compute().item() == pytest.approx(2 / 4)
    m.update(**BATCH_2)
    assert int(m.reference_correct) == 6 and int(m.count) == 3
    assert m.compute().item() == pytest.approx(3 / 6)


def test_abstain_rate_over_updates():
    m = AbstainRate()
    m.update(**BATCH_1)
    m.update(**BATCH_2)
    assert int(m.reference_correct) == 6 and int(m.count) == 1
    assert m.compute().item() == pytest.approx(1 / 6)


def test_abstentions_excluded_from_hallucination():
    ref = _b(T, T, T, T)
    now = _b(F, F, F, T)
    hal, abst = HallucinationRate(), AbstainRate()
    for m in (hal, abst):
        m.update(reference_correct=ref, now_correct=now, abstained=_b(F, F, F, F))
    assert hal.compute().item() == pytest.approx(3 / 4)
    assert abst.compute().item() == 0.0
    hal.reset()
    abst.reset()
    for m in (hal, abst):
        m.update(reference_correct=ref, now_correct=now, abstained=_b(T, T, F, F))
    assert hal.compute().item() == pytest.approx(1 / 4)
    assert abst.compute().item() == pytest.approx(2 / 4)


def test_facts_the_reference_got_wrong_are_ignored():
    m = HallucinationRate()
    m.update(reference_correct=_b(F, F, T), now_correct=_b(F, F, T), abstained=_b(F, T, F))
    assert m.compute().item() == 0.0


@pytest.mark.parametrize("cls", [HallucinationRate, AbstainRate])
def test_nan_without_reference_correct_facts(cls):
    m = cls()
    m.update(reference_correct=_b(F, F), now_correct=_b(F, F), abstained=_b(T, F))
    assert math.isnan(m.compute().item())


def test_reset():
    m = HallucinationRate()
    m.update(**BATCH_1)
    m.reset()
    assert int(m.reference_correct) == 0 and int(m.count) == 0
    m.update(**BATCH_2)
    assert m.compute().item() == pytest.approx(1 / 2)
    acc = ExactMatchAccuracy()
    acc.update(_b(F, F))
    acc.reset()
    acc.update(_b(T))
    assert acc.compute().item() == 1.0


def test_forward_returns_batch_value_and_accumulates():
    m = HallucinationRate()
    assert m(**BATCH_1).item() == pytest.approx(2 / 4)
    assert m(**BATCH_2).item() == pytest.approx(1 / 2)
    assert m.compute().item() == pytest.approx(3 / 6)


def test_states_are_integer_sums():
    for m in (ExactMatchAccuracy(), HallucinationRate(), AbstainRate()):
        for name, default in m._defaults.items():
            assert default.dtype == torch.long, name
            assert m._reductions[name] is not None, name
