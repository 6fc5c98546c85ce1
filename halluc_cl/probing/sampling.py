"""Greedy and sampled answers for a batch of prompts from one shared prefill.

Each prompt is encoded once; its KV cache is then repeated for ``1 + n_samples`` rows (row 0
greedy, the others sampled at temperature τ with top-k), and all rows decode together. Rows
stop at EOS or at a token that contains a newline (few-shot prompts continue with the next
question otherwise).
"""

from __future__ import annotations

import functools

import torch

from halluc_cl.data.padding import left_pad
from halluc_cl.models.modes import eval_mode, left_pad_positions


@functools.lru_cache(maxsize=8)
def _newline_ids(tokenizer) -> frozenset[int]:
    vocab = tokenizer.get_vocab()
    return frozenset(i for tok, i in vocab.items()
                     if "\n" in tokenizer.convert_tokens_to_string([tok]))


def _pick(logits: torch.Tensor, greedy: torch.Tensor, temperature: float, top_k: int,
          generator: torch.Generator | None) -> torch.Tensor:
    """Argmax for ``greedy`` rows, top-k sampling at ``temperature`` for the others."""
    choice = logits.argmax(-1)
    if (~greedy).any():
        scaled = logits[~greedy].float() / temperature
        if 0 < top_k < scaled.shape[-1]:
            kth = scaled.topk(top_k, dim=-1).values[:, -1:]
            scaled = scaled.masked_fill(scaled < kth, float("-inf"))
        probs = torch.softmax(scaled, dim=-1)
        choice[~greedy] = torch.multinomial(probs.cpu(), 1, generator=generator)[:, 0].to(
            choice.device)
    return choice


@torch.no_grad()
def greedy_and_sampled(model, tokenizer, prompts: list[list[int]], n_samples: int,
                       temperature: float = 0.5, top_k: int = 40, max_new_tokens: int = 16,
                       generator: torch.Generator | None = None) -> list[list[str]]:
    """Answers of every prompt: ``[greedy, sample_1, ..., sample_n]`` per prompt.

    Args:
        model: A causal LM (put in eval mode for the call).
        tokenizer: Its tokenizer (``pad_token_id`` and ``eos_token_id`` set).
        prompts: Token ids of each prompt.
        n_samples: Sampled answers per prompt (0 = greedy only).
        temperature: Sampling temperature τ (> 0).
        top_k: Sample among the k most likely tokens (0 = all).
        max_new_tokens: Answer length limit.
        generator: Random generator of the sampling (CPU), for reproducible samples.
    """
    with eval_mode(model):
        return _decode(model, tokenizer, prompts, n_samples, temperature, top_k,
                       max_new_tokens, generator)


def _decode(model, tokenizer, prompts, n_samples, temperature, top_k, max_new_tokens,
            generator) -> list[list[str]]:
    device = next(model.parameters()).device
    rows = 1 + n_samples
    ids, mask = left_pad(prompts, tokenizer.pad_token_id)
    ids, mask = ids.to(device), mask.to(device)
    positions = left_pad_positions(mask)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
    cache = out.past_key_values
    cache.batch_repeat_interleave(rows)
    logits = out.logits[:, -1].repeat_interleave(rows, dim=0)
    mask = mask.repeat_interleave(rows, dim=0)
    next_pos = positions[:, -1:].repeat_interleave(rows, dim=0) + 1
    greedy = (torch.arange(logits.shape[0], device=device) % rows) == 0
    stop = torch.tensor(sorted(_newline_ids(tokenizer) | {tokenizer.eos_token_id}),
                        device=device)
    done = torch.zeros(logits.shape[0], dtype=torch.bool, device=device)
    tokens: list[torch.Tensor] = []
    for step in range(max_new_tokens):
        choice = _pick(logits, greedy, temperature, top_k, generator)
        choice = torch.where(done, torch.full_like(choice, tokenizer.pad_token_id), choice)
        tokens.append(choice)
        done |= torch.isin(choice, stop)
        if done.all() or step == max_new_tokens - 1:
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        out = model(input_ids=choice[:, None], attention_mask=mask, position_ids=next_pos,
                    past_key_values=cache, use_cache=True)
        cache, logits, next_pos = out.past_key_values, out.logits[:, -1], next_pos + 1
    generated = torch.stack(tokens, dim=1).tolist()
    stop_set = set(stop.tolist())
    texts = []
    for row in generated:
        cut = next((i for i, t in enumerate(row) if t in stop_set), len(row))
        texts.append(tokenizer.decode(row[:cut], skip_special_tokens=True).strip())
    return [texts[i:i + rows] for i in range(0, len(texts), rows)]
