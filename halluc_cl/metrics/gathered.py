"""Metrics updated, on every process, with the outcomes of all processes.

The evaluation gathers each fact's outcome from every process once
(``train/evaluation_hooks.py``), so every process holds the same list and updates its metrics
with all of it. Syncing them again would count each fact once per process; they are built
with ``sync_on_compute=False`` and give, exactly, the numbers of one process.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


class GatheredMetric(Metric):
    """A ``Metric`` not synced on ``compute`` by default (module docstring), with list states
    read back by ``concatenated``."""

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("sync_on_compute", False)
        super().__init__(**kwargs)

    @staticmethod
    def concatenated(state: list[Tensor] | Tensor) -> Tensor:
        """A ``cat`` state as one tensor: the per-update tensors joined (or, after a sync,
        the tensor it already is); empty when nothing was added."""
        if isinstance(state, Tensor):
            return state
        return torch.cat(state) if state else torch.empty(0)
