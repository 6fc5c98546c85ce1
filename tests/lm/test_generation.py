"""Left padding and batched greedy decoding against a manual, unpadded greedy loop."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from halluc_cl.facts.padding import left_pad
from halluc_cl.lm.generation import answer_prompts, greedy_answers

VOCAB = ["<pad>", "<unk>", "<eos>", "Answer", "the", "following", "question", ".", ":", "?",
         "Where", "was", "Alice", "Bob", "Smith", "born", "Who", "employs", "Paris", "London",
         "Acme", "New", "York", "I"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(VOCAB)},
                                     unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                   eos_token="<eos>")


def _tiny_gpt2(seed: int) -> GPT2LMHeadModel:
    config = GPT2Config(vocab_size=len(VOCAB), n_positions=64, n_embd=16, n_layer=1, n_head=2,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, initializer_range=0.5,
                        bos_token_id=2, eos_token_id=2, pad_token_id=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GPT2LMHeadModel(config)


PROMPTS = [
    "Where was Alice Smith born ?",
    "Answer the following question . Who employs Bob ? Answer :",
    "Bob",
]


def _manual_greedy(model, ids: list[int], eos_id: int, max_new_tokens: int) -> list[int]:
    """Argmax token by token on the unpadded prompt, recomputing the full forward each step."""
    seq, new = list(ids), []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits = model(input_ids=torch.tensor([seq])).logits
            token = int(logits[0, -1].argmax())
            new.append(token)
            if token == eos_id:
                break
            seq.append(token)
    return new


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_answers_match_manual_loop(tokenizer, seed):
    model = _tiny_gpt2(seed)
    model.train()
    max_new = 5
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    assert len({len(e) for e in encoded}) == len(encoded)  # different lengths -> padding
    input_ids, mask = left_pad(encoded, tokenizer.pad_token_id)

    answers = greedy_answers(model, tokenizer, input_ids, mask, max_new_tokens=max_new)
    assert model.training  # mode restored

    expected = []
    for ids in encoded:
        new = _manual_greedy(model, ids, tokenizer.eos_token_id, max_new)
        expected.append(tokenizer.decode(new, skip_special_tokens=True).strip())
    assert isinstance(answers, list) and all(isinstance(a, str) for a in answers)
    assert answers == expected
    # the check is not vacuous: the shorter prompts produce real words
    assert any(a for a in answers[1:])


def test_greedy_answers_independent_of_batch_company(tokenizer):
    model = _tiny_gpt2(0).eval()
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    batched = greedy_answers(model, tokenizer, *left_pad(encoded, tokenizer.pad_token_id), 4)
    alone = [greedy_answers(model, tokenizer, *left_pad([e], tokenizer.pad_token_id), 4)[0]
             for e in encoded]
    assert batched == alone
    assert not model.training


def test_answer_prompts_batches(tokenizer):
    model = _tiny_gpt2(1).eval()
    prompts = PROMPTS + ["Who employs Alice ?"]
    all_at_once = answer_prompts(model, tokenizer, prompts, batch_size=8, max_new_tokens=3)
    in_pairs = answer_prompts(model, tokenizer, prompts, batch_size=3, max_new_tokens=3)
    assert len(all_at_once) == 4
    assert all_at_once == in_pairs
