"""KL self-distillation to the frozen warm-up snapshot (Kaplan et al. 2026).

YAML::

    model:
      methods:
        - class_path: halluc_cl.methods.KLSelfDistillation
          init_args: {weight: 1.0, temperature: 0.5, direction: forward, tokens: answer}
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from halluc_cl.distributed import mean_over_ranks
from halluc_cl.errors import ConfigError
from halluc_cl.facts.prompts import IGNORE_INDEX
from halluc_cl.methods.base import Method, StepOutputs
from halluc_cl.methods.context import FitContext
from halluc_cl.methods.teacher_cache import TeacherCache, bucketed

Direction = Literal["forward", "reverse", "jsd"]
TokenSet = Literal["answer", "question", "all"]
ExampleSet = Literal["all", "known", "unknown"]


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
    return log_divergence(log_s, log_t, direction)


def log_divergence(log_s: Tensor, log_t: Tensor, direction: Direction) -> Tensor:
    """``divergence`` from student and teacher log-probabilities over the last dimension."""
    if direction == "forward":
        return _kl(log_t, log_s)
    if direction == "reverse":
        return _kl(log_s, log_t)
    log_m = torch.logsumexp(torch.stack([log_s, log_t]), dim=0) - torch.log(torch.tensor(2.0))
    return 0.5 * (_kl(log_t, log_m) + _kl(log_s, log_m))


def _weighted(weight: float, mean: Tensor | None) -> Tensor | None:
    """``weight · mean``; ``None`` (no term) where no process had a position to distil."""
    return None if mean is None else weight * mean


def position_mask(batch: dict, tokens: TokenSet) -> Tensor:
    """Which logit positions to distill: those predicting answer, question or all tokens.

    Position ``i`` predicts token ``i + 1``, so the mask has one column fewer than the batch.
    """
    target_real = batch["attention_mask"][:, 1:].bool()
    if tokens == "all":
        return target_real
    is_answer = batch["labels"][:, 1:] != IGNORE_INDEX
    return is_answer if tokens == "answer" else target_real & ~is_answer


class KLSelfDistillation(Method):
    """KL self-distillation to the frozen snapshot, in two composable forms.

    The paper's form: λ · D(teacher ‖ student) on the SFT batch, averaged over the chosen
    token positions of the chosen examples. The extra-input form: λ_extra · D on
    extra inputs that carry no new fact (``data.extra_per_batch`` of them per batch, see
    ``halluc_cl.data.extra_inputs``), averaged over all their positions.

    The paper's form as a reader's note of Kaplan et al. (2026, Eq. 2) describes it
    (second-hand; ``configs/method/distill_paper.yaml``): forward KL of the full
    next-token distribution at every non-pad position (``tokens: all``), λ = 1, τ = 0.5, to
    the warm-up snapshot, without the τ² factor.

    Args:
        weight: λ of the SFT-batch form (0 turns it off).
        temperature: τ, the softmax temperature of both distributions.
        direction: ``forward`` KL(teacher‖student), ``reverse`` KL(student‖teacher), or ``jsd``.
        tokens: Positions distilled in the SFT batch: those predicting ``answer`` tokens,
            ``question`` (prompt) tokens, or ``all`` tokens.
        examples: Which SFT examples are distilled: ``all``, ``known`` or ``unknown`` ones.
        extra_weight: λ of the extra-input form (0 turns it off; > 0 needs
            ``data.extra_per_batch`` > 0).
        ramp_epochs: Grow both weights linearly over this many SFT epochs (0 = constant).
        scale_by_temperature_squared: Multiply by τ² (Hinton et al.) to keep gradient scale
            comparable across temperatures.
        cache_top_k: 0: a live teacher (a frozen copy of the snapshot, one forward per step).
            k > 0: the snapshot's top-k log-probabilities (and tail mass) on the distilled
            positions of every SFT example and, with ``extra_weight`` > 0, on every
            position of every input of the extra-input pool, computed once at the snapshot
            and read back each step (``methods/teacher_cache.py``): no teacher copy, no
            teacher forward. Needs fixed inputs: SFT answers that stay (no
            ``data.answer_shuffle=epoch``) and pool inputs that do (``questions`` or ``qa``).
    """

    name = "distill"
    needs_teacher = True

    def __init__(
        self,
        weight: float = 1.0,
        temperature: float = 0.5,
        direction: Direction = "forward",
        tokens: TokenSet = "answer",
        examples: ExampleSet = "all",
        extra_weight: float = 0.0,
        ramp_epochs: int = 0,
        scale_by_temperature_squared: bool = False,
        cache_top_k: int = 0,
    ) -> None:
        if weight < 0 or extra_weight < 0:
            raise ConfigError(f"KLSelfDistillation weights must be >= 0, got {weight}, "
                              f"{extra_weight}")
        if temperature <= 0:
            raise ConfigError(f"KLSelfDistillation temperature must be > 0, got {temperature}")
        if direction not in ("forward", "reverse", "jsd"):
            raise ConfigError(f"unknown KL direction {direction!r}: forward, reverse or jsd")
        if tokens not in ("answer", "question", "all"):
            raise ConfigError(f"unknown token set {tokens!r}: answer, question or all")
        if examples not in ("all", "known", "unknown"):
            raise ConfigError(f"unknown example set {examples!r}: all, known or unknown")
        if ramp_epochs < 0:
            raise ConfigError(f"ramp_epochs must be >= 0, got {ramp_epochs}")
        if cache_top_k < 0:
            raise ConfigError(f"cache_top_k must be >= 0, got {cache_top_k}")
        self.cache = TeacherCache(cache_top_k, temperature) if cache_top_k else None
        # the pool's inputs (``data/extra_inputs.py``), every position
        self.pool_cache = TeacherCache(cache_top_k, temperature) \
            if cache_top_k and extra_weight > 0 else None
        self.needs_teacher = self.cache is None
        self.weight, self.temperature, self.direction, self.tokens = (
            weight, temperature, direction, tokens)
        self.examples, self.extra_weight, self.ramp_epochs = examples, extra_weight, ramp_epochs
        self.uses_extra_inputs = extra_weight > 0
        self.scale = temperature**2 if scale_by_temperature_squared else 1.0

    @property
    def wants_teacher_logits(self) -> bool:
        """Teacher logits on the SFT batch: only for a live teacher with ``weight`` > 0."""
        return self.needs_teacher and self.weight > 0

    def _ramp(self, outputs: StepOutputs) -> float:
        if not self.ramp_epochs or outputs.sft_epoch is None:
            return 1.0
        return min(1.0, outputs.sft_epoch / self.ramp_epochs)

    def setup(self, context: FitContext) -> None:
        data = context.data
        if data is None:
            return  # checked again in a fit, where the data module is connected
        if self.cache is not None and self.weight > 0 and data.answer_shuffle == "epoch":
            raise ConfigError("cache_top_k needs fixed SFT examples; data.answer_shuffle=epoch "
                              "changes the answers every epoch")
        if self.pool_cache is not None and data.extra_source == "statements":
            raise ConfigError("cache_top_k with extra_weight > 0 needs fixed extra inputs; "
                              "data.extra_source=statements draws new ones every time (use "
                              "questions or qa)")

    def on_snapshot(self, context: FitContext) -> None:
        if self.cache is None and self.pool_cache is None:
            return
        data = context.require_data("KLSelfDistillation with cache_top_k > 0")
        builds = []
        if self.cache is not None and self.weight > 0:
            builds.append((self.cache, data.cache_examples(), data.collate_train,
                           lambda batch: position_mask(batch, self.tokens)))
        if self.pool_cache is not None and data.extra_inputs is not None:
            builds.append((self.pool_cache, data.extra_inputs.cache_examples(),
                           data.extra_inputs.collate, lambda batch: batch["attention_mask"].bool()))
        for cache, examples, collate, mask_fn in builds:
            context.add_cost(teacher=sum(len(r["input_ids"]) for _, r in examples),
                             every_process=True)
            cache.build(context.student, examples, collate, mask_fn)

    def _cached_divergence(self, cache: TeacherCache, keys: list[str], logits: Tensor,
                           keep_rows: Tensor | None = None) -> Tensor | None:
        """``mean_over_ranks`` of the divergence at the cached positions of the ``keys`` rows
        of ``logits`` (only the rows where ``keep_rows`` is true, if given)."""
        rows, pos, index, log_t = cache.lookup(keys, logits.device)
        if keep_rows is not None:
            keep = keep_rows.to(logits.device)[rows]
            rows, pos, index, log_t = rows[keep], pos[keep], index[keep], log_t[keep]
        log_s = F.log_softmax(logits[rows, pos].float() / self.temperature, dim=-1)
        return mean_over_ranks(log_divergence(bucketed(log_s, index), log_t, self.direction))

    def _cached_term(self, batch: dict, outputs: StepOutputs) -> Tensor | None:
        keep = None
        if self.examples != "all":
            unknown = batch["is_unknown"].bool()
            keep = unknown if self.examples == "unknown" else ~unknown
        return _weighted(self.weight, self._cached_divergence(
            self.cache, batch["keys"], outputs.logits, keep))

    def _batch_term(self, batch: dict, outputs: StepOutputs) -> Tensor | None:
        if self.cache is not None:
            return self._cached_term(batch, outputs)
        mask = position_mask(batch, self.tokens)
        if self.examples != "all":
            rows = batch["is_unknown"].bool()
            mask = mask & (rows if self.examples == "unknown" else ~rows)[:, None]
        # softmax only at the distilled positions (a few answer tokens per example)
        div = divergence(outputs.logits[:, :-1][mask], outputs.teacher_logits[:, :-1][mask],
                         self.temperature, self.direction)
        return _weighted(self.weight, mean_over_ranks(div))

    def _extra_term(self, batch: dict, outputs: StepOutputs) -> Tensor:
        extra = outputs.extra
        if extra is None:
            raise ConfigError("KLSelfDistillation extra_weight > 0 needs data.extra_per_batch > 0")
        if self.pool_cache is not None:
            return _weighted(self.extra_weight, self._cached_divergence(
                self.pool_cache, batch["extra_keys"], extra.logits))
        mask = extra.attention_mask.bool()
        div = divergence(extra.logits, extra.teacher_logits, self.temperature, self.direction)
        return _weighted(self.extra_weight, mean_over_ranks(div[mask]))

    def penalty(self, batch: dict, outputs: StepOutputs) -> Tensor | None:
        terms = []
        if self.weight > 0:
            terms.append(self._batch_term(batch, outputs))
        if self.extra_weight > 0:
            terms.append(self._extra_term(batch, outputs))
        terms = [t for t in terms if t is not None]
        if not terms:
            return None
        return self._ramp(outputs) * self.scale * sum(terms)

    def state_dict(self) -> dict:
        return {name: cache.state_dict() for name, cache in self._caches().items()}

    def load_state_dict(self, state: dict) -> None:
        for name, cache in self._caches().items():
            if name in state:
                cache.load_state_dict(state[name])

    def _caches(self) -> dict[str, TeacherCache]:
        return {name: cache for name, cache in
                (("cache", self.cache), ("pool_cache", self.pool_cache)) if cache is not None}
