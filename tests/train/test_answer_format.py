"""An answer format to teach (``prompt.answer_suffix``): answers are matched without it, and
one-forward evaluation defers to generation, so right-but-unformatted answers stay right."""

from __future__ import annotations

import pytest

from halluc_cl.data.datamodule import FactDataModule
from halluc_cl.facts.prompts import PromptFormat, split_answer
from halluc_cl.lm.loading import load_causal_lm
from halluc_cl.synthetic.resolve import resolve
from halluc_cl.train.evaluation import answer_batch

TINY = "synthetic://tiny"


@pytest.mark.parametrize("text, suffix, out", [
    ("Paris (geo)", " (geo)", ("Paris", True)),
    ("Paris(geo) ", " (geo)", ("Paris", True)),
    ("Paris", " (geo)", ("Paris", False)),
    ("(geo)", " (geo)", ("", True)),
    ("Paris .", "", ("Paris .", True)),
])
def test_split_answer(text, suffix, out):
    assert split_answer(text, suffix) == out


def _module(suffix: str) -> FactDataModule:
    # every Known fact held out, every Unknown one trained (as in test_forward_match)
    dm = FactDataModule(TINY, TINY, unknown_fraction=1.0, n_train=192, n_heldout=192,
                        n_heldout_val=0,
                        known_categories=["HighlyKnown", "MaybeKnown", "WeaklyKnown"],
                        warmup_epochs=0, eval_batch_size=64,
                        prompt=PromptFormat(answer_suffix=suffix))
    dm.load()
    return dm


def test_an_untaught_suffix_leaves_correctness_alone(tiny_model_dir, one_thread):
    model = load_causal_lm(resolve(TINY))
    plain, formatted = _module(""), _module(" .")
    dot = formatted.tokenizer.convert_tokens_to_ids(".")
    assert formatted.encoded("unknown_train")[0]["input_ids"][-2] == dot  # taught before EOS
    n = 0
    for a, b in zip(plain.evaluation.loader("heldout_test"), formatted.evaluation.loader("heldout_test")):
        assert b["answer_suffix"] == " ."
        gen = answer_batch(model, plain.tokenizer, b, 8, "generate")
        assert gen[1] == answer_batch(model, plain.tokenizer, a, 8, "generate")[1]
        # forward becomes hybrid: the base model's unformatted right answers stay right
        assert answer_batch(model, plain.tokenizer, b, 8, "forward")[1:] == gen[1:]
        n += sum(gen[1])
    assert n > 0
