"""KL self-distillation to the frozen warm-up snapshot (Kaplan et al. 2026).

YAML::

    model:
      methods:
        - class_path: halluc_cl.methods.KLSelfDistillation
          init_args: {weight: 1.0, temperature: 0.5, direction: forward, tokens: answer}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from halluc_cl.distributed import mean_over_ranks
from halluc_cl.errors import ConfigError
from halluc_cl.facts.padding import stack_padded
from halluc_cl.facts.prompts import IGNORE_INDEX
from halluc_cl.methods.base import Method, StepOutputs
from halluc_cl.methods.context import FitContext
from halluc_cl.methods.teacher import LiveTeacher, Teacher, TeacherTargets
from halluc_cl.methods.teacher_cache import CachedTopKTeacher

Direction = Literal["forward", "reverse", "jsd"]
TokenSet = Literal["answer", "question", "all"]
ExampleSet = Literal["all", "known", "unknown"]

# Positions per chunk of the KL: fp32 temporaries of at most this many elements (128 MB)
# at a time. A 49 k vocabulary (SmolLM2) takes a batch's positions in one chunk, Gemma's
# 262 k 128 positions a chunk.
CHUNK_ELEMENTS = 1 << 25


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


def target_divergence(logits: Tensor, targets: TeacherTargets, temperature: float,
                      direction: Direction, chunk_elements: int = CHUNK_ELEMENTS) -> Tensor:
    """``[n]`` the divergence at each of the ``targets``' positions, the student's ``logits``
    (``[B, T, V]``) softened at those positions.

    The positions go in chunks of ``chunk_elements // V``, each recomputed in the backward
    pass (``torch.utils.checkpoint``), so the fp32 softmax over the vocabulary exists for one
    chunk at a time, never for the whole batch: with a 262 k vocabulary the whole batch's would
    be several hundred MB for each of the student's and the teacher's. One chunk takes the
    plain path (no recomputation).
    """
    student = logits[targets.rows, targets.pos]
    size = max(1, chunk_elements // student.shape[-1])

    def chunk(span: slice, part: Tensor) -> Tensor:
        return log_divergence(targets.student_log_probs(part, span, temperature),
                              targets.log_probs(span, temperature), direction)

    n = student.shape[0]
    if n <= size:
        return chunk(slice(0, n), student)
    return torch.cat([checkpoint(chunk, slice(a, a + size), student[a:a + size],
                                 use_reentrant=False) for a in range(0, n, size)])


def position_mask(batch: dict, tokens: TokenSet) -> Tensor:
    """Which logit positions to distill: those predicting answer, question or all tokens.

    Position ``i`` predicts token ``i + 1``, so the mask has one column fewer than the batch.
    """
    target_real = batch["attention_mask"][:, 1:].bool()
    if tokens == "all":
        return target_real
    is_answer = batch["labels"][:, 1:] != IGNORE_INDEX
    return is_answer if tokens == "answer" else target_real & ~is_answer


@dataclass
class _Form:
    """One form of the penalty on one step: its λ, the student's logits, the teacher, the
    distilled positions and the inputs (``targets``: the teacher's, once read)."""

    weight: float
    logits: Tensor
    teacher: Teacher
    mask: Tensor
    inputs: dict
    targets: TeacherTargets | None = None


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
        self.cached = cache_top_k > 0
        # the SFT batch's teacher: the cached one (built at the snapshot) or a live one (the
        # fit's, from the context at the snapshot); the extra-input pool's: the cached one, or
        # the live teacher again
        self.teacher: Teacher | None = \
            CachedTopKTeacher(cache_top_k, temperature) if self.cached and weight > 0 else None
        self.pool_teacher: CachedTopKTeacher | None = \
            CachedTopKTeacher(cache_top_k, temperature) if self.cached and extra_weight > 0 else None
        self.pad_id = 0  # the tokenizer's, for stacking inputs for one live-teacher forward
        self.weight, self.temperature, self.direction, self.tokens = (
            weight, temperature, direction, tokens)
        self.examples, self.extra_weight, self.ramp_epochs = examples, extra_weight, ramp_epochs
        self.uses_extra_inputs = extra_weight > 0
        self.scale = temperature**2 if scale_by_temperature_squared else 1.0

    def _ramp(self, outputs: StepOutputs) -> float:
        if not self.ramp_epochs or outputs.sft_epoch is None:
            return 1.0
        return min(1.0, outputs.sft_epoch / self.ramp_epochs)

    def setup(self, context: FitContext) -> None:
        data = context.data
        if data is None:
            return  # checked again in a fit, where the data module is connected
        if self.teacher is not None and self.cached and data.answer_shuffle == "epoch":
            raise ConfigError("cache_top_k needs fixed SFT examples; data.answer_shuffle=epoch "
                              "changes the answers every epoch")
        if self.pool_teacher is not None and data.extra_source == "statements":
            raise ConfigError("cache_top_k with extra_weight > 0 needs fixed extra inputs; "
                              "data.extra_source=statements draws new ones every time (use "
                              "questions or qa)")

    def on_snapshot(self, context: FitContext) -> None:
        """Take the teacher: the fit's live snapshot teacher, or build the caches from the
        student at the snapshot (their forwards counted as teacher tokens, once)."""
        if not self.cached:
            self.teacher, self.pad_id = context.snapshot_teacher(), context.tokenizer.pad_token_id
            return
        data = context.require_data("KLSelfDistillation with cache_top_k > 0")
        builds = []
        if self.teacher is not None:
            builds.append((self.teacher, data.cache_examples(), data.collate_train,
                           lambda batch: position_mask(batch, self.tokens)))
        if self.pool_teacher is not None and data.extra_inputs is not None:
            builds.append((self.pool_teacher, data.extra_inputs.cache_examples(),
                           data.extra_inputs.collate, lambda batch: batch["attention_mask"].bool()))
        for teacher, examples, collate, mask_fn in builds:
            context.add_cost(teacher=sum(len(r["input_ids"]) for _, r in examples),
                             every_process=True)
            teacher.build(context.student, examples, collate, mask_fn)

    def on_resume(self, context: FitContext) -> None:
        """The live teacher again, with the snapshot's weights (the caches come back with the
        method's state)."""
        if not self.cached:
            self.teacher, self.pad_id = context.restore_teacher(), context.tokenizer.pad_token_id

    def release(self) -> None:
        """Drop the teacher (a method that reads it no more: L2's ``match_kl`` once measured)."""
        self.teacher = self.pool_teacher = None

    def _sft_mask(self, batch: dict) -> Tensor:
        """The distilled positions of the SFT batch: the token set of the chosen examples."""
        mask = position_mask(batch, self.tokens)
        if self.examples != "all":
            rows = batch["is_unknown"].bool()
            mask = mask & (rows if self.examples == "unknown" else ~rows)[:, None]
        return mask

    def _forms(self, batch: dict, outputs: StepOutputs) -> list[_Form]:
        """The forms that are on, each with its teacher's targets; a live teacher runs once,
        over the SFT rows and the extra rows stacked."""
        forms = []
        if self.weight > 0:
            forms.append(_Form(self.weight, outputs.logits, self.teacher, self._sft_mask(batch),
                               {"input_ids": batch["input_ids"],
                                "attention_mask": batch["attention_mask"],
                                "keys": batch.get("keys")}))
        if self.extra_weight > 0:
            extra = outputs.extra
            if extra is None:
                raise ConfigError("KLSelfDistillation extra_weight > 0 needs "
                                  "data.extra_per_batch > 0")
            forms.append(_Form(self.extra_weight, extra.logits, self.pool_teacher or self.teacher,
                               extra.attention_mask.bool(),
                               {"input_ids": batch["extra_input_ids"],
                                "attention_mask": extra.attention_mask,
                                "keys": batch.get("extra_keys")}))
        live = [f for f in forms if isinstance(f.teacher, LiveTeacher)]
        if live:
            logits = self.teacher.logits({
                "input_ids": stack_padded([f.inputs["input_ids"] for f in live], self.pad_id),
                "attention_mask": stack_padded([f.inputs["attention_mask"] for f in live], 0)})
            for form, part in zip(live, logits.split([len(f.mask) for f in live])):
                width = form.inputs["input_ids"].shape[1]
                form.targets = self.teacher.targets(form.inputs, form.mask, part[:, :width])
        for form in forms:
            if form.targets is None:
                form.targets = form.teacher.targets(form.inputs, form.mask)
        return forms

    def penalty(self, batch: dict, outputs: StepOutputs) -> Tensor | None:
        if self.teacher is None and self.pool_teacher is None:
            raise ConfigError("KLSelfDistillation has no teacher: its snapshot was never taken")
        terms = []
        for form in self._forms(batch, outputs):
            mean = mean_over_ranks(target_divergence(form.logits, form.targets,
                                                     self.temperature, self.direction))
            if mean is not None:  # None: no process had a position to distil
                terms.append(form.weight * mean)
        if not terms:
            return None
        return self._ramp(outputs) * self.scale * sum(terms)

    def state_dict(self) -> dict:
        """The caches (a live teacher's weights go beside the checkpoints, not here)."""
        return {name: teacher.state_dict() for name, teacher in self._caches().items()}

    def load_state_dict(self, state: dict) -> None:
        for name, teacher in self._caches().items():
            if name in state:
                teacher.load_state_dict(state[name])

    def _caches(self) -> dict[str, CachedTopKTeacher]:
        return {name: teacher for name, teacher in
                (("cache", self.teacher), ("pool_cache", self.pool_teacher))
                if isinstance(teacher, CachedTopKTeacher)}
