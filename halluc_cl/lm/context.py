"""The context length of a model: how many positions a prompt plus its answer may take
(``FactDataModule.check_context`` refuses facts past it before any step runs)."""

from __future__ import annotations

from torch import nn


def context_limit(model: nn.Module) -> int | None:
    """The model's maximum number of positions (``n_positions`` for GPT-2,
    ``max_position_embeddings`` for Llama-style configs); ``None`` when its config has
    neither."""
    config = model.config
    return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
