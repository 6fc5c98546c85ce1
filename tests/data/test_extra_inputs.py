"""Distillation-only inputs never touch the evaluation set or the SFT mix."""

import random

import pytest

from halluc_cl.data.datamodule import FactDataModule
from halluc_cl.data.extra_inputs import ExtraInputs, distill_pool
from halluc_cl.data.prompts import PromptFormat
from halluc_cl.errors import ConfigError

TINY = "synthetic://tiny"


def make(**kw) -> FactDataModule:
    args = {"source": TINY, "tokenizer": TINY, "n_train": 32, "n_heldout": 16, "batch_size": 8,
            "extra_per_batch": 4}
    return FactDataModule(**{**args, **kw})


@pytest.mark.parametrize("source", ["questions", "qa", "statements"])
def test_pool_is_disjoint_from_eval_and_sft(tiny_model_dir, source):
    dm = make(extra_source=source)
    pool = dm.extra_inputs.pool
    assert pool
    used = {f.id for split in dm.splits.values() for f in split}
    held_pairs = {(f.subject, f.relation) for f in dm.splits["heldout_known"]}
    assert not {f.id for f in pool} & used
    assert not {(f.subject, f.relation) for f in pool} & held_pairs
    assert all(f.category != "Unknown" for f in pool)


def test_statements_never_state_a_heldout_fact(tiny_model_dir):
    dm = make(extra_source="statements", extra_per_batch=64)
    tok = dm.tokenizer
    held = {(f.subject, f.object) for f in dm.splits["heldout_known"]}
    rng = random.Random(0)
    for _ in range(5):
        batch = dm.extra_inputs.sample(64, rng)
        for ids, mask in zip(batch["extra_input_ids"], batch["extra_attention_mask"]):
            text = tok.decode(ids[mask.bool()])
            assert not any(s in text and o in text.split() for s, o in held)


def test_batches_carry_distill_inputs_after_warmup_only(tiny_model_dir):
    dm = make(warmup_epochs=1)

    class FakeTrainer:
        reload_dataloaders_every_n_epochs = 1
        current_epoch = 0

    dm.trainer = FakeTrainer()
    assert all("extra_input_ids" not in b for b in dm.train_dataloader())
    FakeTrainer.current_epoch = 1
    batches = list(dm.train_dataloader())
    assert all(b["extra_input_ids"].shape[0] == 4 for b in batches)
    assert all(b["extra_attention_mask"][:, 0].all() for b in batches)  # right padding


def test_question_inputs_are_prompts_without_answers(tiny_model_dir):
    dm = make(extra_source="questions")
    batch = dm.extra_inputs.sample(4, random.Random(1))
    tok = dm.tokenizer
    for ids, mask in zip(batch["extra_input_ids"], batch["extra_attention_mask"]):
        text = tok.decode(ids[mask.bool()])
        assert text.startswith("Answer the following question") and text.endswith("Answer :")


def test_errors():
    with pytest.raises(ConfigError, match="no Known facts are left"):
        ExtraInputs([], "questions", None, PromptFormat())
    with pytest.raises(ConfigError, match="statements needs a synthetic"):
        ExtraInputs(["x"], "statements", None, PromptFormat())
    assert distill_pool([], {"heldout_known": []}, ["Unknown"]) == []
