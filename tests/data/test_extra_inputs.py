"""Extra (distillation / replay) inputs never touch a held-out subject or the SFT mix."""

import random

import pytest
import torch

from halluc_cl.data.datamodule import FactDataModule
from halluc_cl.data.extra_inputs import ExtraInputs
from halluc_cl.errors import ConfigError
from halluc_cl.facts.prompts import IGNORE_INDEX, PromptFormat

TINY = "synthetic://tiny"


def make(**kw) -> FactDataModule:
    args = {"source": TINY, "tokenizer": TINY, "n_train": 32, "n_heldout": 16, "batch_size": 8,
            "extra_per_batch": 4}
    dm = FactDataModule(**{**args, **kw})
    dm.load()  # the split and tokenizer (``setup`` does it in a fit)
    return dm


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


def test_random_selection_keeps_its_stream_and_names_its_facts(tiny_model_dir):
    """``random`` draws what ``rng.sample(pool, n)`` draws, and ``extra_keys`` name those
    pool facts: their prompts are the inputs."""
    dm = make(extra_source="questions")
    inputs = dm.extra_inputs
    batch = inputs.sample(5, random.Random(7))
    want = random.Random(7).sample(inputs.pool, 5)
    assert batch["extra_keys"] == [f"pool:{inputs.pool.index(f)}" for f in want]
    prompts = inputs.prompt_ids(want)
    for ids, mask, prompt in zip(batch["extra_input_ids"], batch["extra_attention_mask"], prompts):
        assert ids[mask.bool()].tolist() == prompt
    keys, rows = zip(*inputs.cache_examples())
    assert keys[3] == "pool:3" and rows[3]["input_ids"] == inputs.prompt_ids()[3]


def test_nearest_takes_each_querys_neighbours_in_rank_order():
    pool = [f"f{i}" for i in range(6)]
    inputs = ExtraInputs(pool, "questions", None, PromptFormat(), select="nearest")
    angles = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0])  # pool states on the unit circle
    pool_states = torch.stack([angles.cos(), angles.sin()], dim=1)
    queries = torch.tensor([[1.0, 0.1], [-1.0, 0.05]])  # near angle 0.1 and near angle 3.09
    inputs.set_neighbours(queries, 3 * pool_states, depth=3)  # cosine: the scale is irrelevant
    assert inputs.neighbours.tolist() == [[0, 1, 2], [5, 4, 3]]
    rng = random.Random(0)
    assert inputs.indices(4, rng, queries=[0, 1]) == [0, 5, 1, 4]  # first ranks first
    assert inputs.indices(2, rng, queries=[1]) == [5, 4]
    # a shared neighbour is taken once; the shortfall is drawn from the rest of the pool
    inputs.neighbours = torch.tensor([[2, 0], [2, 1]], dtype=torch.int)
    picked = inputs.indices(5, rng, queries=[0, 1])
    assert picked[:3] == [2, 0, 1] and len(set(picked)) == 5
    # a batch without Unknown facts draws at random, as ``random`` does
    assert inputs.indices(3, random.Random(4), queries=[]) == random.Random(4).sample(range(6), 3)


def test_nearest_needs_extra_inputs_and_a_ranking(tiny_model_dir):
    with pytest.raises(ConfigError, match="nearest chooses extra inputs"):
        make(extra_per_batch=0, extra_select="nearest")
    dm = make(extra_select="nearest")
    with pytest.raises(RuntimeError, match="no snapshot has ranked"):
        dm.extra_inputs.sample(4, random.Random(0), queries=[0])
    with pytest.raises(ConfigError, match="unknown extra_select"):
        ExtraInputs(["x"], "questions", None, PromptFormat(), select="closest")
    assert dm.state_dict() == {}
    dm.extra_inputs.neighbours = torch.tensor([[1, 2]], dtype=torch.int)
    other = make(extra_select="nearest")
    other.load_state_dict(dm.state_dict())
    assert other.extra_inputs.neighbours.tolist() == [[1, 2]]


def test_statements_cannot_be_cached(tiny_model_dir):
    with pytest.raises(ConfigError, match="cannot hold"):
        make(extra_source="statements").extra_inputs.cache_examples()
