"""Representation drift of held-out Known facts (the mechanism study, H3).

    halluc-cl fit --config configs/sft.yaml --model.drift_layer -1   # logs heldout_drift

The state of a fact is the hidden state at the last prompt token (the position that predicts
the answer) at a chosen layer. Drift is the mean cosine distance ``1 − cos(h_now, h_ref)``
between the current states and those at the end of the warm-up (the snapshot), over the
held-out Known facts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from halluc_cl.facts.padding import left_pad
from halluc_cl.lm.modes import eval_mode, left_pad_positions
from halluc_cl.metrics.gathered import GatheredMetric


@torch.no_grad()
def last_token_states(model, input_ids: Tensor, attention_mask: Tensor, layer: int) -> Tensor:
    """Hidden states ``[batch, d]`` at the last position of left-padded prompts.

    Args:
        model: A causal LM that returns ``hidden_states``.
        input_ids: Left-padded prompt ids.
        attention_mask: Their mask.
        layer: Index into ``hidden_states`` (0 = embeddings, -1 = the last block's output).
    """
    with eval_mode(model):
        out = model(input_ids=input_ids, attention_mask=attention_mask,
                    position_ids=left_pad_positions(attention_mask), output_hidden_states=True)
    return out.hidden_states[layer][:, -1].float()


def prompt_states(model, prompts: list[list[int]], pad_id: int, layer: int = -1,
                  batch_size: int = 256) -> Tensor:
    """``last_token_states`` of token-id prompts, left-padded in batches of ``batch_size``
    on the model's device: ``[len(prompts), d]`` (``[0, 0]`` for no prompt)."""
    device = next(model.parameters()).device
    states = []
    for start in range(0, len(prompts), batch_size):
        ids, mask = left_pad(prompts[start:start + batch_size], pad_id)
        states.append(last_token_states(model, ids.to(device), mask.to(device), layer))
    return torch.cat(states) if states else torch.zeros(0, 0)


def cosine_drift(current: Tensor, reference: Tensor) -> Tensor:
    """Mean ``1 − cos`` between matching rows of ``current`` and ``reference`` (``[n, d]``)."""
    if current.shape != reference.shape or current.ndim != 2:
        raise ValueError(f"need two [n, d] tensors of one shape, got {tuple(current.shape)} "
                         f"and {tuple(reference.shape)}")
    return (1.0 - F.cosine_similarity(current.float(), reference.float(), dim=-1)).mean()


class RepresentationDrift(GatheredMetric):
    """``cosine_drift`` of the held-out facts of one evaluation: ``update`` with the current
    and reference states of the facts (``[n, d]`` each, any number of calls), ``compute`` the
    mean over all of them (every process holds every fact's states: ``metrics/gathered.py``).
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("current", [], dist_reduce_fx="cat")
        self.add_state("reference", [], dist_reduce_fx="cat")

    def update(self, current: Tensor, reference: Tensor) -> None:
        if current.shape != reference.shape or current.ndim != 2:
            raise ValueError(f"need two [n, d] tensors of one shape, got "
                             f"{tuple(current.shape)} and {tuple(reference.shape)}")
        self.current.append(current.float())
        self.reference.append(reference.float())

    def compute(self) -> Tensor:
        return cosine_drift(self.concatenated(self.current), self.concatenated(self.reference))
