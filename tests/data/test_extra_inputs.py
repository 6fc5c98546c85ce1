"""Extra (distillation / replay) inputs never touch a held-out subject or the SFT mix."""

import random

import pytest

from halluc_cl.data.datamodule import FactDataModule
from halluc_cl.data.extra_inputs import ExtraInputs
from halluc_cl.errors import ConfigError
from halluc_cl.facts.prompts import IGNORE_INDEX, PromptFormat

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
    held = {f.subject for s in ("heldout_test", "heldout_val") for f in dm.splits[s]}
    assert not {f.id for f in pool} & used
    assert not {f.subject for f in pool} & held
    assert all(f.category == "HighlyKnown" for f in pool)


def test_statements_never_state_a_heldout_fact(tiny_model_dir):
    dm = make(extra_source="statements", extra_per_batch=64)
    tok = dm.tokenizer
    held = {(f.subject, f.object) for s in ("heldout_test", "heldout_val")
            for f in dm.splits[s]}
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
    assert all((b["extra_labels"] == IGNORE_INDEX).all() for b in batches)  # questions: no labels


def test_qa_inputs_label_their_answer_tokens(tiny_model_dir):
    dm = make(extra_source="qa")
    batch = dm.extra_inputs.sample(4, random.Random(2))
    tok = dm.tokenizer
    objects = {f.object for f in dm.extra_inputs.pool}
    for ids, labels in zip(batch["extra_input_ids"], batch["extra_labels"]):
        answer = labels[labels != IGNORE_INDEX]
        assert answer[-1] == tok.eos_token_id
        assert tok.decode(answer[:-1]).strip() in objects
        assert (ids[labels != IGNORE_INDEX] == answer).all()


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
