"""L2 pull toward anchor weights: the warm-up snapshot or the weights the fit started from.

YAML (λ matched to the KL term's gradient norm, as Kaplan et al. 2026 did)::

    model:
      methods:
        - class_path: halluc_cl.methods.L2ToAnchor
          init_args:
            anchor: snapshot
            weight: 1.0
            match_kl: {weight: 1.0, temperature: 0.5}

Loss: ``λ/2 · ‖θ − θ*‖²``. With ``match_kl`` the effective λ is ``weight · ‖∇KL‖ / ‖∇½‖θ−θ*‖²‖``
measured once, at the first SFT step where both gradients are non-zero (at the snapshot itself
both vanish); until then the penalty is off, and the scale is kept in the checkpoint.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from halluc_cl.errors import ConfigError
from halluc_cl.methods.anchor import QuadraticAnchor
from halluc_cl.methods.base import StepOutputs
from halluc_cl.methods.context import FitContext
from halluc_cl.methods.distill import KLSelfDistillation


def grad_norm(value: Tensor, params: list[torch.nn.Parameter]) -> float:
    """‖∂value/∂params‖₂, keeping the graph for the real backward pass."""
    grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
    sq = [g.float().pow(2).sum() for g in grads if g is not None]
    return float(torch.stack(sq).sum().sqrt()) if sq else 0.0


class L2ToAnchor(QuadraticAnchor):
    """``λ/2 · ‖θ − θ*‖²`` over the trainable parameters.

    Args:
        weight: λ, or with ``match_kl`` the multiplier of the matched λ (1 = equal gradient
            norms).
        anchor: ``snapshot`` (end of the warm-up, the distillation teacher's weights) or
            ``init`` (the weights the fit started from).
        match_kl: A KL self-distillation term (paper form, ``extra_weight: 0``) whose gradient
            norm λ is matched to; it is only measured, never added to the loss.
    """

    name = "l2"

    def __init__(self, weight: float = 1.0, anchor: Literal["snapshot", "init"] = "snapshot",
                 match_kl: KLSelfDistillation | None = None) -> None:
        super().__init__(weight)
        if anchor not in ("snapshot", "init"):
            raise ConfigError(f"L2ToAnchor anchor must be 'snapshot' or 'init', got {anchor!r}")
        if match_kl is not None and match_kl.uses_extra_inputs:
            raise ConfigError("L2ToAnchor match_kl must be the SFT-batch form (extra_weight: 0)")
        if match_kl is not None and match_kl.cached:
            raise ConfigError("L2ToAnchor match_kl needs the live teacher (cache_top_k: 0)")
        self.anchor_at, self.match_kl = anchor, match_kl
        self.scale: float | None = None if match_kl is not None else 1.0

    def setup(self, context: FitContext) -> None:
        super().setup(context)
        if self.anchor_at == "init" and not self.anchor:
            self.capture(context)

    def on_snapshot(self, context: FitContext) -> None:
        if self.anchor_at == "snapshot":
            self.capture(context)
        if self.scale is None:
            self.match_kl.on_snapshot(context)  # its teacher, until the scale is measured

    def on_resume(self, context: FitContext) -> None:
        if self.scale is None:
            self.match_kl.on_resume(context)

    def strength(self) -> float | None:
        return None if self.scale is None else self.weight * self.scale

    def penalty(self, batch: dict, outputs: StepOutputs) -> Tensor | None:
        if self.fused and self.scale is not None:
            return None  # the gradient is added before the optimizer step
        half_dist = 0.5 * self.distance()
        if self.scale is None:
            kl = self.match_kl.penalty(batch, outputs)
            params = list(self._params.values())
            g_kl = grad_norm(kl, params) if kl is not None else 0.0
            g_l2 = grad_norm(half_dist, params)
            if g_kl <= 1e-12 or g_l2 <= 1e-12:
                return None
            self.scale = g_kl / g_l2
            self.match_kl.release()  # measured once: its teacher is read no more
            if self.fused:
                return None  # from now on before_optimizer_step adds the gradient, this step too
        return self.weight * self.scale * half_dist

    def state_dict(self) -> dict:
        return {**super().state_dict(), "scale": self.scale}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.scale = state.get("scale", self.scale)
