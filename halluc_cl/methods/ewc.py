"""Elastic weight consolidation (Kirkpatrick et al. 2017) around the warm-up snapshot.

YAML::

    model:
      methods:
        - class_path: halluc_cl.methods.EWC
          init_args: {weight: 1.0, fisher_samples: 256}

Loss: ``λ/2 · Σ_i F_i (θ_i − θ*_i)²`` with θ* the snapshot and ``F`` the empirical diagonal
Fisher of the snapshot on Known training facts, from **per-sample** gradients of the answer's
log-likelihood: ``F_i = 1/N Σ_n (∂ log p(y_n | x_n) / ∂θ_i)²`` — not the square of a batch-mean
gradient, which cancels across samples and underestimates ``F``. With ``normalize`` the Fisher
is divided by its mean, so λ is on the scale of L2-to-anchor's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from halluc_cl.errors import ConfigError
from halluc_cl.facts.prompts import IGNORE_INDEX
from halluc_cl.lm.modes import eval_mode
from halluc_cl.methods.anchor import QuadraticAnchor
from halluc_cl.methods.context import FitContext


def diagonal_fisher(
    model: nn.Module,
    samples: Iterable,
    log_likelihood: Callable[[nn.Module, object], Tensor],
    params: dict[str, nn.Parameter],
) -> dict[str, Tensor]:
    """Empirical diagonal Fisher: the mean over samples of squared per-sample gradients.

    Args:
        model: The model (put in eval mode for the duration).
        samples: One item per sample, passed to ``log_likelihood``.
        log_likelihood: ``(model, sample) -> scalar`` log p(y | x) of that one sample.
        params: The parameters to take the Fisher of.

    Returns:
        Float32 tensors shaped like ``params``.
    """
    sums = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    count = 0
    with eval_mode(model), torch.enable_grad():
        for sample in samples:
            grads = torch.autograd.grad(log_likelihood(model, sample), list(params.values()),
                                        allow_unused=True)
            for name, g in zip(params, grads):
                if g is not None:
                    sums[name] += g.float().pow(2)
            count += 1
    if count == 0:
        raise ConfigError("EWC got no samples to estimate the Fisher from")
    return {n: s / count for n, s in sums.items()}


def answer_log_likelihood(model: nn.Module, batch: dict) -> Tensor:
    """Summed log-probability of the answer tokens (``labels`` not ignored) of a batch."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"][:, 1:]
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
    mask = labels != IGNORE_INDEX
    picked = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return picked[mask].sum()


class EWC(QuadraticAnchor):
    """EWC penalty with a per-sample diagonal Fisher computed once, at the snapshot.

    Args:
        weight: λ (≥ 0).
        fisher_samples: Cap on the Known training facts used for the Fisher (≥ 1).
        normalize: Divide the Fisher by its mean over all entries.
    """

    name = "ewc"

    def __init__(self, weight: float = 1.0, fisher_samples: int = 256,
                 normalize: bool = True) -> None:
        super().__init__(weight)
        if fisher_samples < 1:
            raise ConfigError(f"EWC fisher_samples must be >= 1, got {fisher_samples}")
        self.fisher_samples, self.normalize = fisher_samples, normalize

    def on_snapshot(self, context: FitContext) -> None:
        self.capture(context)
        data = context.require_data("EWC (the Known facts of its Fisher)")
        samples = [{k: v.to(context.device) if torch.is_tensor(v) else v for k, v in s.items()}
                   for s in data.known_samples(self.fisher_samples)]
        fisher = diagonal_fisher(context.student, samples, answer_log_likelihood, self._params)
        # one forward + backward per sample
        context.add_cost(student=sum(s["attention_mask"].sum() for s in samples),
                         every_process=True)
        if self.normalize:
            mean = torch.cat([f.flatten() for f in fisher.values()]).mean()
            if mean <= 0:
                raise ConfigError("the EWC Fisher is zero everywhere; the snapshot fits its "
                                  "Known facts perfectly or no parameter is trainable")
            fisher = {n: f / mean for n, f in fisher.items()}
        self.importance = fisher
