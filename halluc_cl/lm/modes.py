"""Small helpers for running a model outside training: eval mode, left-padded positions and
the KV cache's name in a forward call."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Put ``model`` in eval mode (no dropout) for the block, then restore its mode."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def left_pad_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids of left-padded sequences: 0 at each row's first real token."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


@functools.cache
def _cache_keyword(model_class: type) -> str:
    params = inspect.signature(model_class.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def with_cache(model: torch.nn.Module, cache) -> dict:
    """The keyword argument that hands ``cache`` (a KV cache) to ``model``'s forward.

    transformers renamed ``past_key_values`` to ``cache`` within 5.x (the old name warns and
    goes in 5.40); ``pyproject.toml`` admits versions on both sides, so the name is read off
    the model's own ``forward``.
    """
    return {_cache_keyword(type(model)): cache}


def returned_cache(output):
    """The KV cache a forward with ``use_cache=True`` returned, under either name."""
    cache = output.get("cache")  # not ``get("cache", output.past_key_values)``: that one warns
    return output.past_key_values if cache is None else cache
