"""Quadratic pull toward anchor weights, the shared core of L2-to-anchor and EWC.

    penalty = λ/2 · Σ_i w_i (θ_i − θ*_i)²

with ``w_i = 1`` (L2) or the diagonal Fisher (EWC). Only trainable parameters are anchored
(frozen ones and, under LoRA, the base weights cannot move).
"""

from __future__ import annotations

import torch
from torch import Tensor

from halluc_cl.errors import ConfigError
from halluc_cl.models.zero import deepspeed_stage
from halluc_cl.regularizers.base import Regularizer


def trainable(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """Named parameters that receive gradients."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


class QuadraticAnchor(Regularizer):
    """Base of plugins whose penalty is a weighted squared distance to anchor weights.

    Args:
        weight: λ (≥ 0).
    """

    def __init__(self, weight: float = 1.0) -> None:
        if weight < 0:
            raise ConfigError(f"{type(self).__name__} weight must be >= 0, got {weight}")
        self.weight = weight
        self.anchor: dict[str, Tensor] = {}
        self.importance: dict[str, Tensor] | None = None  # None: every weight counts 1
        self._params: dict[str, torch.nn.Parameter] = {}

    def setup(self, module) -> None:
        if deepspeed_stage(getattr(module, "_trainer", None)) == 3:
            raise ConfigError(f"{type(self).__name__} needs whole parameters on every rank; "
                              "ZeRO-3 shards them: use configs/deepspeed/zero2.yaml (or KL "
                              "distillation with the cached teacher under ZeRO-3)")
        self._params = trainable(module.student)

    def capture(self, module) -> None:
        """Take the current trainable weights as the anchor."""
        self._params = trainable(module.student)
        self.anchor = {n: p.detach().clone() for n, p in self._params.items()}

    def distance(self) -> Tensor:
        """Σ_i w_i (θ_i − θ*_i)², in float32."""
        if not self.anchor:
            raise RuntimeError(f"{type(self).__name__} has no anchor yet")
        terms = []
        for name, anchor in self.anchor.items():
            param = self._params[name]
            if anchor.device != param.device:  # restored from a checkpoint onto CPU
                anchor = self.anchor[name] = anchor.to(param.device)
                if self.importance is not None:
                    self.importance[name] = self.importance[name].to(param.device)
            diff = (param.float() - anchor.float()).pow(2)
            if self.importance is not None:
                diff = diff * self.importance[name]
            terms.append(diff.sum())
        return torch.stack(terms).sum()

    def penalty(self, batch: dict, outputs: dict) -> Tensor | None:
        return 0.5 * self.weight * self.distance()

    def state_dict(self) -> dict:
        return {"anchor": self.anchor, "importance": self.importance}

    def load_state_dict(self, state: dict) -> None:
        self.anchor = state.get("anchor", {})
        self.importance = state.get("importance")
