"""Greedy exact match from one teacher-forced forward pass (no generation).

Greedy decoding of a prompt yields the candidate answer's tokens ``a_1..a_L`` exactly when the
argmax of the next-token distribution is ``a_i`` after ``prompt + a_<i`` for every ``i`` and,
when ``L < max_new_tokens``, a stop token after ``prompt + a_1..a_L`` (EOS, or a token whose
text starts a new line: ``greedy_answers`` cuts answers at the first newline). So one forward
over ``prompt + answer`` rows decides it for every candidate (each alias, each abstention
phrase) at once, instead of ``max_new_tokens`` sequential decoding steps.
"""

from __future__ import annotations

import torch

from halluc_cl.facts.padding import right_pad
from halluc_cl.lm.modes import eval_mode

_STOP_IDS: dict[tuple[int, int], torch.Tensor] = {}


def stop_token_ids(tokenizer) -> torch.Tensor:
    """Ids that end a greedy answer: EOS and every token whose text starts a new line."""
    key = (id(tokenizer), len(tokenizer))
    if key not in _STOP_IDS:
        ids = {tokenizer.eos_token_id}
        for i in range(len(tokenizer)):
            text = tokenizer.decode([i])
            if text.lstrip(" \t").startswith(("\n", "\r")):
                ids.add(i)
        _STOP_IDS[key] = torch.tensor(sorted(i for i in ids if i is not None))
    return _STOP_IDS[key]


@torch.no_grad()
def greedy_produces(model, tokenizer, prompts: list[list[int]],
                    candidates: list[list[list[int]]], max_new_tokens: int,
                    first_tokens: list[int | None] | None = None) -> list[list[bool]]:
    """Whether greedy decoding of each prompt would produce each of its candidate answers.

    Args:
        model: A causal LM.
        tokenizer: Its tokenizer (EOS and pad ids; the stop tokens are derived from it).
        prompts: Prompt token ids, one list per prompt.
        candidates: For each prompt, the token ids of its candidate answers (as trained:
            ``PromptFormat.target(answer)``, without EOS).
        max_new_tokens: The generation limit the check mirrors.
        first_tokens: If given, filled with each prompt's greedy first answer token (``None``
            for a prompt without candidates).

    Returns:
        ``out[i][j]``: greedy decoding of prompt ``i`` yields candidate ``j``.
    """
    rows = [(i, j) for i, cands in enumerate(candidates) for j in range(len(cands))]
    out = [[False] * len(cands) for cands in candidates]
    usable = [(i, j) for i, j in rows if 0 < len(candidates[i][j]) <= max_new_tokens]
    if first_tokens is not None:
        first_tokens[:] = [None] * len(prompts)
    if not usable:
        return out
    seqs = [prompts[i] + candidates[i][j] for i, j in usable]
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids, mask = right_pad(seqs, pad)
    with eval_mode(model):
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
    stops = stop_token_ids(tokenizer).to(device)
    # the position predicting answer token k is len(prompt) + k - 1
    row_idx, pos, target, needs_stop = [], [], [], []
    for r, (i, j) in enumerate(usable):
        start, answer = len(prompts[i]), candidates[i][j]
        row_idx += [r] * len(answer)
        pos += list(range(start - 1, start + len(answer) - 1))
        target += answer
        needs_stop.append(len(answer) < max_new_tokens)
    greedy = logits[torch.tensor(row_idx, device=device),
                    torch.tensor(pos, device=device)].argmax(-1)
    hits = (greedy == torch.tensor(target, device=device)).cpu()
    last = torch.tensor([len(prompts[i]) + len(candidates[i][j]) - 1 for i, j in usable],
                        device=device)
    stop_ok = torch.isin(logits[torch.arange(len(usable), device=device), last].argmax(-1),
                         stops).cpu()
    if first_tokens is not None:
        starts = greedy.cpu().tolist()
        k = 0
        for i, j in usable:
            if first_tokens[i] is None:
                first_tokens[i] = starts[k]
            k += len(candidates[i][j])
    k = 0
    for r, (i, j) in enumerate(usable):
        n = len(candidates[i][j])
        out[i][j] = bool(hits[k:k + n].all()) and (not needs_stop[r] or bool(stop_ok[r]))
        k += n
    return out
