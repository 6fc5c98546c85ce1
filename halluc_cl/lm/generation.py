"""Batched greedy answers from a causal LM (left padding, KV cache)."""

from __future__ import annotations

import torch

from halluc_cl.facts.padding import left_pad
from halluc_cl.facts.prompts import encode_prompts
from halluc_cl.lm.modes import eval_mode
from halluc_cl.lm.zero import is_partitioned


@torch.no_grad()
def greedy_answers(
    model, tokenizer, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int
) -> list[str]:
    """Greedy-decode answers for a left-padded batch of prompts and return their text."""
    with eval_mode(model):
        out = model.generate(
            input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
            do_sample=False, pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            # ZeRO-3: every rank must run as many forwards as the others (each gathers weights)
            synced_gpus=is_partitioned(model),
        )
    new_tokens = out[:, input_ids.shape[1]:]
    texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    # a model that was never taught to stop (e.g. a real LM before SFT) goes on after a newline
    return [t.strip().split("\n", 1)[0].strip() for t in texts]


def answer_prompts(model, tokenizer, prompts: list[str], batch_size: int = 256,
                   max_new_tokens: int = 8) -> list[str]:
    """Greedy answers for a list of prompt strings, in batches."""
    answers: list[str] = []
    for start in range(0, len(prompts), batch_size):
        ids = encode_prompts(tokenizer, prompts[start:start + batch_size])
        input_ids, mask = left_pad(ids, tokenizer.pad_token_id)
        device = next(model.parameters()).device
        answers += greedy_answers(model, tokenizer, input_ids.to(device), mask.to(device),
                                  max_new_tokens)
    return answers
