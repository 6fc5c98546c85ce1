"""Hidden-state similarity between facts (the mechanism study, H3 and the attribution).

Two facts are similar when the model represents their questions alike: the cosine similarity
of the hidden states at the last prompt token (the position that predicts the answer) at a
chosen layer, from one model (by default the run's base model, before any SFT).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from halluc_cl.facts.prompts import PromptFormat, encode_prompts
from halluc_cl.facts.schema import Fact
from halluc_cl.metrics.drift import prompt_states


def fact_states(model, tokenizer, facts: list[Fact], layer: int = -1,
                prompt: PromptFormat | None = None, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Unit-norm hidden states of the facts' question prompts, by fact id.

    Args:
        model: A causal LM that returns ``hidden_states``.
        tokenizer: Its tokenizer (with a pad token).
        facts: Facts whose ``question`` is encoded.
        layer: Index into ``hidden_states`` (0 = embeddings, -1 = the last block).
        prompt: Prompt format (default ``PromptFormat()``).
        batch_size: Prompts per forward pass.
    """
    fmt = prompt or PromptFormat()
    ids = encode_prompts(tokenizer, [fmt.prompt(f.question) for f in facts])
    h = prompt_states(model, ids, tokenizer.pad_token_id, layer, batch_size)
    return dict(zip((f.id for f in facts), F.normalize(h, dim=-1).cpu()))


def cosine(states: dict[str, torch.Tensor]):
    """``score(a, b)``: cosine similarity of two facts' states (as a Python float)."""

    def score(a: Fact, b: Fact) -> float:
        return float(states[a.id] @ states[b.id])

    return score
