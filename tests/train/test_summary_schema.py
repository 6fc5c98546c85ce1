"""``summary.json`` against its JSON Schema (the suite also checks every summary it writes:
``tests/conftest.py``)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from halluc_cl.train.run_files import SCHEMA_VERSION, build_summary
from halluc_cl.train.summary_schema import SUMMARY_SCHEMA, summary_errors


def _module() -> SimpleNamespace:
    """What ``build_summary`` reads of a FactSFTModule after a 3-epoch fit."""
    history = [{"epoch": e, "heldout_test_acc": 1.0 - e / 4, "heldout_val_acc": 1.0,
                "new_fact_acc": e / 2, "known_train_acc": 1.0, "new_fact_abstain_rate": 0.0,
                "heldout_test_peak": 1.0, "heldout_test_decline": e / 4,
                "heldout_val_peak": 1.0, "heldout_val_decline": 0.0} for e in range(3)]
    history[-1].update(hallucination_rate=0.5, abstain_rate=0.0, heldout_drift=0.1,
                       heldout_test_snapshot_loss=0.5, heldout_test_snapshot_loss_rel=0.5,
                       heldout_test_forgotten=1, heldout_test_forgotten_rate=0.5,
                       heldout_test_gained=0, heldout_test_lasting_loss=0.375,
                       heldout_test_lasting_loss_rel=0.375)
    predictions = [{"id": i, "split": "heldout_test", "correct": c}
                   for i, c in (("a", True), ("b", False))]
    return SimpleNamespace(history=history, warmup_epochs=1, warmup_end_epoch=0,
                           lasting_window=3, reference={"a": True, "b": True},
                           last_predictions=predictions, model_spec="synthetic://tiny",
                           methods=[],
                           run_cost=lambda: {"student_tokens": 10, "teacher_tokens": 4})


def test_build_summary_follows_the_schema():
    protocol = {"split_seed": 0, "order_seed": 0, "heldout_disjoint": "subject", "seed": 0,
                "processes": 1,
                "split_sizes": dict.fromkeys(("heldout_val", "heldout_test", "known_train",
                                              "unknown_train", "pool", "heldout_subjects"), 4),
                "config_hash": "0" * 64}
    summary = build_summary(_module(), 1.5, protocol)
    assert summary_errors(summary) == []
    test = summary["snapshot"]["heldout_test"]
    assert (test["acc"], test["snapshot_loss"], test["lasting_loss"]) == (1.0, 0.5, 0.375)
    assert (test["kept_ids"], test["forgotten_ids"]) == (["a"], ["b"])
    assert set(summary["snapshot"]) == {"window", "heldout_test"}  # no other split measured
    assert set(summary) == set(SUMMARY_SCHEMA["properties"]) == set(SUMMARY_SCHEMA["required"])
    assert SUMMARY_SCHEMA["properties"]["schema_version"] == {"const": SCHEMA_VERSION}


@pytest.mark.parametrize(("change", "error"), [
    ({"schema_version": SCHEMA_VERSION - 1}, "$.schema_version"),
    ({"new_field": 1}, "Additional properties are not allowed ('new_field'"),
    ({"final": {"heldout_test_acc": 1.5}}, "$.final.heldout_test_acc: 1.5 is greater than"),
    ({"final": {"heldout_acc": 1.0}}, "Additional properties are not allowed ('heldout_acc'"),
    ({"cost": {"student_tokens": 1, "teacher_tokens": 0}}, "'train_token_passes' is a required"),
    ({"protocol": {"seed": 0, "config_hash": "abc"}}, "$.protocol.config_hash: 'abc' does not"),
    ({"history": [{"heldout_test_acc": 1.0}]}, "$.history[0]: 'epoch' is a required property"),
    ({"git_commit": "main"}, "$.git_commit: 'main' does not match"),
])
def test_schema_catches_a_changed_summary(change, error, summary_stub):
    assert summary_errors(summary_stub()) == []
    errors = summary_errors(summary_stub(**change))
    assert any(error in e for e in errors), errors
