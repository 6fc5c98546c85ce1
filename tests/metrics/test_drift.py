"""Representation drift: the cosine distance by hand, padding-invariant states, and the
``heldout_drift`` metric of a fit."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from halluc_cl.facts.padding import left_pad
from halluc_cl.metrics.drift import cosine_drift, last_token_states


def test_cosine_drift_on_hand_made_states():
    ref = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    now = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, -1.0]])  # same, orthogonal, opposite
    assert cosine_drift(now, ref).item() == pytest.approx((0.0 + 1.0 + 2.0) / 3)
    rotated = torch.tensor([[math.cos(0.5), math.sin(0.5)]])
    assert cosine_drift(rotated, ref[:1]).item() == pytest.approx(1 - math.cos(0.5))
    with pytest.raises(ValueError, match="shape"):
        cosine_drift(now[:2], ref)


def test_last_token_states_ignore_left_padding():
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=30, n_positions=16, n_embd=8, n_layer=2,
                                       n_head=2, pad_token_id=0))
    prompts = [[5, 6, 7, 8], [9, 10]]
    ids, mask = left_pad(prompts, 0)
    batched = last_token_states(model, ids, mask, -1)
    alone = torch.cat([last_token_states(model, torch.tensor([p]), torch.ones(1, len(p)), -1)
                       for p in prompts])
    assert torch.allclose(batched, alone, atol=1e-5)
    assert last_token_states(model, ids, mask, 1).shape == (2, 8)


def test_fit_logs_drift_from_the_warmup_end(fit_tiny):
    module, _ = fit_tiny([], epochs=3, lr=3e-3, module_kwargs={"drift_layer": -1})
    drift = [h["heldout_drift"] for h in module.history]
    assert drift[0] == pytest.approx(0.0, abs=1e-6)  # the reference itself
    assert all(d > 1e-4 for d in drift[1:])  # SFT moves the held-out states
    assert set(module.drift_reference) == {f.id for f in
                                           module.trainer.datamodule.splits["heldout_test"]}
    plain, _ = fit_tiny([], epochs=2, lr=3e-3)
    assert "heldout_drift" not in plain.history[-1]
