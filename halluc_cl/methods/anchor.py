"""Quadratic pull toward anchor weights, the shared core of L2-to-anchor and EWC.

    penalty = λ/2 · Σ_i w_i (θ_i − θ*_i)²

with ``w_i = 1`` (L2) or the diagonal Fisher (EWC). Only trainable parameters are anchored
(frozen ones and, under LoRA, the base weights cannot move).

The penalty's gradient ``λ · w_i (θ_i − θ*_i)`` is added straight to the gradients before the
optimizer step (``before_optimizer_step``, multi-tensor kernels) instead of through autograd:
the same update without a second pass over every weight in the backward. Under DeepSpeed,
whose gradients live in its own buffers, the penalty goes through autograd as a loss term.
"""

from __future__ import annotations

import torch
from torch import Tensor

from halluc_cl.errors import ConfigError
from halluc_cl.methods.base import Method, StepOutputs
from halluc_cl.methods.context import FitContext


def trainable(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """Named parameters that receive gradients."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


class QuadraticAnchor(Method):
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
        self._sqrt_importance: list[Tensor] | None = None  # cached √w in the weights' dtype
        self._sqrt_of: list[Tensor] | None = None  # the cast importance it was taken of
        self._cast_key: tuple | None = None  # what _cast_value was cast for
        self._cast_value: tuple[list[Tensor], list[Tensor] | None] | None = None

    fused = False  # setup turns it on: the gradient is added before the optimizer step

    def setup(self, context: FitContext) -> None:
        stage = context.zero_stage
        self.fused = stage is None
        if stage == 3:
            raise ConfigError(f"{type(self).__name__} needs whole parameters on every rank; "
                              "ZeRO-3 shards them: use configs/deepspeed/zero2.yaml (or KL "
                              "distillation with the cached teacher under ZeRO-3)")
        if context.fsdp:
            raise ConfigError(f"{type(self).__name__} needs whole parameters on every rank; "
                              "FSDP shards them: use configs/deepspeed/zero2.yaml or DDP")
        self._params = trainable(context.student)

    def capture(self, context: FitContext) -> None:
        """Take the current trainable weights as the anchor."""
        self._params = trainable(context.student)
        self.anchor = {n: p.detach().clone() for n, p in self._params.items()}

    def distance(self) -> Tensor:
        """Σ_i w_i (θ_i − θ*_i)², with multi-tensor (``torch._foreach``) kernels: a handful of
        launches for all parameters instead of several per parameter; norms in float32."""
        if not self.anchor:
            raise RuntimeError(f"{type(self).__name__} has no anchor yet")
        names = list(self.anchor)
        params = [self._params[n] for n in names]
        anchors, importance = self._cast(names, params)
        diffs = torch._foreach_sub(params, anchors)
        if importance is not None:
            if self._sqrt_of is not importance:
                self._sqrt_importance, self._sqrt_of = torch._foreach_sqrt(importance), importance
            diffs = torch._foreach_mul(diffs, self._sqrt_importance)
        norms = torch._foreach_norm(diffs, 2, dtype=torch.float32)
        return torch.stack(norms).pow(2).sum()

    def _cast(self, names: list[str], params: list[Tensor]):
        """Anchors and importance on the weights' device and dtype, cast once and kept."""
        key = (tuple(names), params[0].device, params[0].dtype, id(self.anchor),
               id(self.importance))
        if self._cast_key != key:
            anchors = [self.anchor[n].to(device=p.device, dtype=p.dtype)
                       for n, p in zip(names, params)]
            importance = None if self.importance is None else [
                self.importance[n].to(device=p.device, dtype=p.dtype)
                for n, p in zip(names, params)]
            self._cast_key, self._cast_value = key, (anchors, importance)
        return self._cast_value

    def strength(self) -> float | None:
        """The λ multiplying ``distance() / 2`` (``None`` while it is not known yet)."""
        return self.weight

    def penalty(self, batch: dict, outputs: StepOutputs) -> Tensor | None:
        if self.fused:
            return None  # see before_optimizer_step
        return 0.5 * self.weight * self.distance()

    @torch.no_grad()
    def before_optimizer_step(self, context: FitContext) -> None:
        """Add ``λ · w (θ − θ*)`` to the gradients; log the penalty on the logger's steps."""
        strength = self.strength()
        if not self.fused or not strength or not self.anchor:
            return
        names = [n for n in self.anchor if self._params[n].grad is not None]
        params = [self._params[n] for n in names]
        if not params:
            return
        anchors, importance = self._cast(names, params)
        diffs = torch._foreach_sub(params, anchors)
        if importance is not None:
            torch._foreach_mul_(diffs, importance)
        torch._foreach_add_([p.grad for p in params], diffs, alpha=strength)
        context.log(f"reg/{self.name}", 0.5 * strength * self.distance().detach())

    def state_dict(self) -> dict:
        return {"anchor": self.anchor, "importance": self.importance}

    def load_state_dict(self, state: dict) -> None:
        self.anchor = state.get("anchor", {})
        self.importance = state.get("importance")
        self._cast_key = None  # cast the restored tensors afresh
