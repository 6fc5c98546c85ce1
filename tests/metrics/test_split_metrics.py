"""One collection per split, fed one record of per-fact outcomes, against counts by hand."""

import pytest
import torch

from halluc_cl.metrics.split_metrics import SPLITS, FactOutcomes, SplitMetrics, outcomes_of


def _t(*bits):
    return torch.tensor([bool(b) for b in bits])


def test_heldout_test_names_and_values_by_hand():
    # 5 facts: right at the snapshot 1,1,1,1,0; now right 1,0,0,0,1; abstaining 0,0,1,0,0
    m = SplitMetrics("heldout_test")
    m.update(FactOutcomes(correct=_t(1, 0, 0, 0, 1), abstained=_t(0, 0, 1, 0, 0),
                          reference=_t(1, 1, 1, 1, 0), formatted=_t(1, 1, 0, 1, 1)))
    out = m.compute()
    assert out["heldout_test_acc"] == pytest.approx(2 / 5)
    assert out["hallucination_rate"] == pytest.approx(2 / 4)  # facts 2 and 4: wrong, no IDK
    assert out["abstain_rate"] == pytest.approx(1 / 4)  # fact 3
    assert out["format_rate"] == pytest.approx(4 / 5)
    assert out["heldout_test_forgotten"] == 3 and out["heldout_test_gained"] == 1
    assert out["heldout_test_snapshot_loss"] == pytest.approx((4 - 2) / 5)
    # forgotten = hallucinated + abstained, among the facts right at the snapshot
    assert out["heldout_test_forgotten_rate"] == pytest.approx(
        out["hallucination_rate"] + out["abstain_rate"])


def test_before_the_snapshot_only_accuracy_and_reset():
    m = SplitMetrics("heldout_val")
    m.update(FactOutcomes(correct=_t(1, 0), abstained=_t(0, 0)))
    assert m.compute() == {"heldout_val_acc": 0.5}
    m.reset()
    assert m.compute() == {}


def test_new_facts_report_their_abstention_and_gains():
    m = SplitMetrics("unknown_train")
    m.update(FactOutcomes(correct=_t(1, 1, 0), abstained=_t(0, 0, 1), reference=_t(0, 0, 0)))
    out = m.compute()
    assert out["new_fact_acc"] == pytest.approx(2 / 3)
    assert out["new_fact_abstain_rate"] == pytest.approx(1 / 3)
    assert out["new_fact_gained"] == 2 and out["new_fact_snapshot_loss"] == pytest.approx(-2 / 3)
    assert "new_fact_forgotten_rate" not in out  # none was right at the snapshot
    assert "hallucination_rate" not in out and "val_hallucination_rate" not in out


def test_records_become_outcomes_with_the_reference_only_when_complete():
    records = [{"id": "a", "correct": True, "abstained": False},
               {"id": "b", "correct": False, "abstained": True}]
    full = outcomes_of(records, {"a": True, "b": True})
    assert full.reference.tolist() == [True, True] and full.formatted is None
    assert full.correct.tolist() == [True, False] and full.abstained.tolist() == [False, True]
    assert outcomes_of(records, {"a": True}).reference is None  # an older checkpoint's
    assert outcomes_of(records, {}).reference is None


def test_every_split_has_its_own_names():
    accs = [names.acc for names in SPLITS.values()]
    stems = [names.stem for names in SPLITS.values()]
    assert len(set(accs)) == len(set(stems)) == len(SPLITS) == 4
