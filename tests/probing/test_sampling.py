"""Batched greedy and sampled decoding: rows that share a token history run once and rows
that stopped leave the batch, with the answers of running every row to the end."""

from __future__ import annotations

import pytest
import torch

from halluc_cl.facts.padding import left_pad
from halluc_cl.facts.prompts import PromptFormat
from halluc_cl.facts.schema import read_facts
from halluc_cl.lm.modes import left_pad_positions, returned_cache, with_cache
from halluc_cl.probing import sampling
from halluc_cl.synthetic.resolve import resolve


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from halluc_cl.lm.loading import load_causal_lm, load_tokenizer

    torch.set_num_threads(1)
    spec = resolve("synthetic://tiny")
    return (load_causal_lm(spec).eval(), load_tokenizer(spec),
            read_facts(tiny_model_dir / "facts.jsonl"))


def _every_row(model, tok, prompts, n_samples, temperature, top_k, max_new_tokens, generator):
    """The plain algorithm: every row (a copy of its prompt) runs every step until all are
    done; a finished row keeps drawing and emits padding."""
    rows = 1 + n_samples
    ids, mask = left_pad(prompts, tok.pad_token_id)
    ids, mask = ids.repeat_interleave(rows, 0), mask.repeat_interleave(rows, 0)
    positions = left_pad_positions(mask)
    greedy = torch.arange(len(ids)) % rows == 0
    stop = sampling._newline_ids(tok) | {tok.eos_token_id}
    done = torch.zeros(len(ids), dtype=torch.bool)
    cache, tokens = None, []
    for step in range(max_new_tokens):
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                    **with_cache(model, cache))
        cache, logits = returned_cache(out), out.logits[:, -1]
        choice = logits.argmax(-1)
        scaled, index = (logits[~greedy].float() / temperature).topk(top_k, dim=-1)
        drawn = torch.multinomial(torch.softmax(scaled, -1), 1, generator=generator)
        choice[~greedy] = index.gather(1, drawn)[:, 0]
        choice[done] = tok.pad_token_id
        tokens.append(choice)
        done |= torch.isin(choice, torch.tensor(sorted(stop)))
        if done.all():
            break
        ids, positions = choice[:, None], positions[:, -1:] + 1
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    texts = []
    for row in torch.stack(tokens, 1).tolist():
        cut = next((i for i, t in enumerate(row) if t in stop), len(row))
        texts.append(tok.decode(row[:cut], skip_special_tokens=True).strip())
    return [texts[i:i + rows] for i in range(0, len(texts), rows)]


def _decoded_rows(model):
    """A list that collects the batch size of every one-token forward of ``model``."""
    seen: list[int] = []

    def hook(module, args, kwargs):
        if kwargs["input_ids"].shape[1] == 1:
            seen.append(kwargs["input_ids"].shape[0])

    return seen, model.register_forward_pre_hook(hook, with_kwargs=True)


def test_shared_histories_and_finished_rows_give_the_answers_of_every_row(tiny):
    model, tok, facts = tiny
    # whole prompts end in one answer token; prompts cut 2 or 3 tokens short first write
    # the rest of the template ("Answer :", "? Answer :"), so rows stop at different steps
    full = [tok(PromptFormat().prompt(f.question), add_special_tokens=False)["input_ids"]
            for f in facts[:24]]
    prompts = [ids[:len(ids) - (0, 2, 3)[i % 3]] for i, ids in enumerate(full)]
    args = {"n_samples": 4, "temperature": 1.5, "top_k": 8, "max_new_tokens": 8}
    seen, handle = _decoded_rows(model)
    try:
        fast = sampling.greedy_and_sampled(model, tok, prompts,
                                           generator=torch.Generator().manual_seed(3), **args)
        fast_rows, seen[:] = sum(seen), []
        plain = _every_row(model, tok, prompts, generator=torch.Generator().manual_seed(3),
                           **args)
        plain_rows = sum(seen)
    finally:
        handle.remove()
    assert fast == plain
    # the test covers what it claims: samples that leave their greedy row, rows of one
    # prompt that stop at different steps, and fewer rows run than the plain algorithm's
    assert sum(s != o[0] for o in fast for s in o[1:]) >= 10
    lengths = {len(tok(a, add_special_tokens=False)["input_ids"]) for o in fast for a in o}
    assert len(lengths) >= 3
    assert fast_rows < plain_rows / 2

