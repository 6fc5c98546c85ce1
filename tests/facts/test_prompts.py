"""Prompt formatting and answer-only labels, with a word-level tokenizer built in the test."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from halluc_cl.facts.prompts import DEFAULT_TEMPLATE, IGNORE_INDEX, PromptFormat, encode_example

VOCAB = ["<pad>", "<unk>", "<eos>", "Answer", "the", "following", "question", ".", ":", "?",
         "Where", "was", "Alice", "born", "Paris", "New", "York", "Q", "A"]
ID = {w: i for i, w in enumerate(VOCAB)}


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordLevel(vocab=dict(ID), unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                   eos_token="<eos>")


def test_prompt_format():
    fmt = PromptFormat()
    assert fmt.template == DEFAULT_TEMPLATE
    assert fmt.prompt("Where was Alice born ?") == (
        "Answer the following question.\nWhere was Alice born ?\nAnswer:")
    assert fmt.target("Paris") == " Paris"
    custom = PromptFormat(template="Q: {question} A:", answer_prefix="")
    assert custom.prompt("x") == "Q: x A:"
    assert custom.target("Paris") == "Paris"


def test_tokenizer_sanity(tokenizer):
    assert tokenizer.eos_token_id == ID["<eos>"] and tokenizer.pad_token_id == ID["<pad>"]


def test_encode_example_default_format(tokenizer):
    ex = encode_example(tokenizer, PromptFormat(), "Where was Alice born ?", "Paris")
    prompt_words = ["Answer", "the", "following", "question", ".", "Where", "was", "Alice",
                    "born", "?", "Answer", ":"]
    prompt = [ID[w] for w in prompt_words]
    answer = [ID["Paris"], ID["<eos>"]]
    assert ex["prompt_len"] == 12
    assert ex["input_ids"] == prompt + answer
    assert ex["labels"] == [IGNORE_INDEX] * 12 + answer
    assert len(ex["labels"]) == len(ex["input_ids"])


def test_encode_example_multi_token_answer_and_custom_format(tokenizer):
    fmt = PromptFormat(template="Q : {question} A :")
    ex = encode_example(tokenizer, fmt, "Where was Alice born ?", "New York")
    prompt = [ID[w] for w in ["Q", ":", "Where", "was", "Alice", "born", "?", "A", ":"]]
    answer = [ID["New"], ID["York"], ID["<eos>"]]
    assert ex["prompt_len"] == len(prompt) == 9
    assert ex["input_ids"] == prompt + answer
    assert ex["labels"] == [-100] * 9 + answer
    # labels are -100 exactly on the prompt and equal the inputs after it
    n = ex["prompt_len"]
    assert all(label == IGNORE_INDEX for label in ex["labels"][:n])
    assert ex["labels"][n:] == ex["input_ids"][n:]
    assert IGNORE_INDEX not in ex["labels"][n:]
    assert ex["labels"][-1] == tokenizer.eos_token_id


def test_unknown_answer_word_maps_to_unk(tokenizer):
    ex = encode_example(tokenizer, PromptFormat(), "Where was Alice born ?", "Lyon")
    assert ex["labels"][ex["prompt_len"]:] == [ID["<unk>"], ID["<eos>"]]
