"""KL self-distillation to the frozen warm-up snapshot (Kaplan et al. 2026).

YAML::

    model:
      regularizers:
        - class_path: halluc_cl.regularizers.KLSelfDistillation
          init_args: {weight: 1.0, temperature: 0.5, direction: forward, tokens: answer}
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from halluc_cl.data.prompts import IGNORE_INDEX
from halluc_cl.errors import ConfigError
from halluc_cl.regularizers.base import Regularizer

Direction = Literal["forward", "reverse", "jsd"]
TokenSet = Literal["answer", "question", "all"]


def _kl(log_p: Tensor, log_q: Tensor) -> Tensor:
    """KL(p || q) over the last dimension, from log-probabilities."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def divergence(student_logits: Tensor, teacher_logits: Tensor, temperature: float,
               direction: Direction) -> Tensor:
    """Per-position divergence between softened teacher and student distributions.

    ``forward`` is KL(teacher || student), ``reverse`` KL(student || teacher), ``jsd`` the
    Jensen-Shannon divergence. Computed in float32.
    """
    log_s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    if direction == "forward":
        return _kl(log_t, log_s)
    if direction == "reverse":
        return _kl(log_s, log_t)
    log_m = torch.logsumexp(torch.stack([log_s, log_t]), dim=0) - torch.log(torch.tensor(2.0))
    return 0.5 * (_kl(log_t, log_m) + _kl(log_s, log_m))


def position_mask(batch: dict, tokens: TokenSet) -> Tensor:
    """Which logit positions to distill: those predicting answer, question or all tokens.

    Position ``i`` predicts token ``i + 1``, so the mask has one column fewer than the batch.
    """
    target_real = batch["attention_mask"][:, 1:].bool()
    if tokens == "all":
        return target_real
    is_answer = batch["labels"][:, 1:] != IGNORE_INDEX
    return is_answer if tokens == "answer" else target_real & ~is_answer


class KLSelfDistillation(Regularizer):
    """λ · D(teacher ‖ student) on the SFT batch, averaged over the chosen token positions.

    Args:
        weight: λ, the penalty weight.
        temperature: τ, the softmax temperature of both distributions.
        direction: ``forward`` KL(teacher‖student), ``reverse`` KL(student‖teacher), or ``jsd``.
        tokens: Positions distilled: those predicting ``answer`` tokens, ``question`` (prompt)
            tokens, or ``all`` tokens.
        scale_by_temperature_squared: Multiply by τ² (Hinton et al.) to keep gradient scale
            comparable across temperatures.
    """

    name = "distill"
    needs_teacher = True

    def __init__(
        self,
        weight: float = 1.0,
        temperature: float = 0.5,
        direction: Direction = "forward",
        tokens: TokenSet = "answer",
        scale_by_temperature_squared: bool = False,
    ) -> None:
        if weight < 0:
            raise ConfigError(f"KLSelfDistillation weight must be >= 0, got {weight}")
        if temperature <= 0:
            raise ConfigError(f"KLSelfDistillation temperature must be > 0, got {temperature}")
        if direction not in ("forward", "reverse", "jsd"):
            raise ConfigError(f"unknown KL direction {direction!r}: forward, reverse or jsd")
        if tokens not in ("answer", "question", "all"):
            raise ConfigError(f"unknown token set {tokens!r}: answer, question or all")
        self.weight, self.temperature, self.direction, self.tokens = (
            weight, temperature, direction, tokens)
        self.scale = temperature**2 if scale_by_temperature_squared else 1.0

    def penalty(self, batch: dict, outputs: dict) -> Tensor | None:
        mask = position_mask(batch, self.tokens)
        if not mask.any():
            return None
        div = divergence(outputs["logits"][:, :-1], outputs["teacher_logits"][:, :-1],
                         self.temperature, self.direction)
        return self.weight * self.scale * div[mask].mean()
