"""The snapshot teacher: one interface (``Teacher``), three forms, owned by the method that
reads it (docs/methods.md).

A teacher gives the snapshot's distribution at a batch's distilled positions
(``Teacher.targets``). The live forms run the snapshot on the batch: a frozen copy of the
student (``SnapshotTeacher``) or, for a LoRA student, the student with its adapter off
(``AdapterOffTeacher``). The cached form (``CachedTopKTeacher``, ``methods/teacher_cache.py``)
reads back the snapshot's top-k log-probabilities and tail mass, computed once. A teacher is
never a registered submodule of the LightningModule: not in the optimizer, not in the module's
``state_dict``, not partitioned by ZeRO; a live teacher's weights are written once beside the
checkpoints (``save_teacher``), which keep only their file's path and sha256.

The method that distils (``KLSelfDistillation``, also inside L2's ``match_kl``) asks the
``FitContext`` for a live teacher at the snapshot (``FitContext.snapshot_teacher``) and, on a
resume, for the same one again (``FitContext.restore_teacher``); the module builds it with
``snapshot_teacher`` below.
"""

from __future__ import annotations

import copy
import hashlib
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from peft import PeftModel
from torch import Tensor

from halluc_cl.errors import ConfigError, ModelLoadError
from halluc_cl.io import atomic_write
from halluc_cl.lm.modes import eval_mode
from halluc_cl.lm.zero import full_state_dict, is_partitioned
from halluc_cl.methods.context import FitContext


def _whole_copy(student: torch.nn.Module) -> torch.nn.Module:
    """An unpartitioned copy of a ZeRO-3 student (a deep copy would copy empty shards)."""
    from transformers import AutoModelForCausalLM

    if isinstance(student, PeftModel):
        raise ConfigError("a live teacher of a LoRA student under ZeRO-3 is not supported; "
                          "use the cached teacher (KLSelfDistillation cache_top_k > 0)")
    state = full_state_dict(student)
    model = AutoModelForCausalLM.from_config(student.config)
    model.load_state_dict(state)
    model.to(next(student.parameters()).dtype)
    return model.to(next(student.parameters()).device)


def tail_log_mass(top_log_probs: Tensor) -> Tensor:
    """``log(1 − Σ exp(top))`` over the last dimension, clamped away from ``log 0``."""
    top_mass = top_log_probs.exp().sum(-1).clamp(max=1.0 - 1e-6)
    return torch.log1p(-top_mass)


def bucketed(log_probs: Tensor, index: Tensor) -> Tensor:
    """``[n, k + 1]`` log-probabilities of the ``index`` tokens and of all the others."""
    top = log_probs.gather(-1, index)
    return torch.cat([top, tail_log_mass(top)[..., None]], dim=-1)


@dataclass
class TeacherTargets:
    """The teacher's distribution at a batch's distilled positions.

    Attributes:
        rows: ``[n]`` the batch row of each position.
        pos: ``[n]`` its logit position.
        scores: ``[n, V]`` the teacher's logits (a live teacher: softened per chunk of
            positions by ``log_probs``), or ``[n, k + 1]`` log-probabilities at the
            distillation temperature of the top-k tokens and of the tail (the cached teacher).
        index: ``[n, k]`` the top-k token ids (``None``: the whole vocabulary).
    """

    rows: Tensor
    pos: Tensor
    scores: Tensor
    index: Tensor | None = None

    def log_probs(self, span: slice, temperature: float) -> Tensor:
        """The teacher's log-probabilities (fp32) at positions ``span``."""
        if self.index is not None:
            return self.scores[span]
        return F.log_softmax(self.scores[span].float() / temperature, dim=-1)

    def student_log_probs(self, logits: Tensor, span: slice, temperature: float) -> Tensor:
        """The student's ``logits`` at positions ``span`` over the same outcomes (the top-k
        tokens and the tail for the cached teacher)."""
        log_s = F.log_softmax(logits.float() / temperature, dim=-1)
        return log_s if self.index is None else bucketed(log_s, self.index[span])


def _no_count(**_) -> None:
    """The token counter of a teacher built outside a fit: nothing is counted."""


class Teacher(ABC):
    """The model at the snapshot, as the penalties read it.

    Args:
        count: Counts the tokens of its forwards (``FitContext.add_cost``).
    """

    def __init__(self, count: Callable[..., None] = _no_count) -> None:
        self.count = count

    @abstractmethod
    def targets(self, inputs: dict, mask: Tensor) -> TeacherTargets:
        """The teacher's distribution at the ``mask`` positions of ``inputs``
        (``input_ids``, ``attention_mask``; the cached teacher reads ``keys``)."""

    def to(self, device: torch.device) -> Teacher:
        """Move to ``device`` (a no-op for a teacher that shares the student's weights)."""
        return self

    def state_dict(self) -> dict | None:
        """What restores it that the student does not hold: a live copy's weights (which
        ``save_teacher`` writes beside the checkpoints) or the cached log-probabilities (the
        method's checkpoint state); ``None``: nothing."""
        return None

    def load_state_dict(self, state: dict | None) -> None:
        """Restore what ``state_dict`` returned."""


class LiveTeacher(Teacher):
    """A teacher that runs the snapshot model on every batch (no graph, eval mode)."""

    @abstractmethod
    def forward_logits(self, inputs: dict) -> Tensor:
        """The snapshot's logits on ``inputs``."""

    @torch.no_grad()
    def logits(self, inputs: dict) -> Tensor:
        """The snapshot's logits on ``inputs`` (``input_ids``, ``attention_mask``), its
        tokens counted."""
        self.count(teacher=inputs["attention_mask"].sum())
        return self.forward_logits(inputs)

    def targets(self, inputs: dict, mask: Tensor, logits: Tensor | None = None) -> TeacherTargets:
        """As ``Teacher.targets``; ``logits``: this teacher's logits on ``inputs`` when the
        caller has them (one forward over several inputs, stacked)."""
        logits = self.logits(inputs) if logits is None else logits
        rows, pos = mask.nonzero(as_tuple=True)
        return TeacherTargets(rows, pos, logits[rows, pos])


class SnapshotTeacher(LiveTeacher):
    """A frozen copy of the student taken at the end of the warm-up.

    Args:
        student: The model to copy.
        compile: Compile the copy's forward (``Module.compile``, dynamic shapes). Required
            for a student compiled in place: a deep copy carries the student's compiled call
            along, and compiling the copy gives it its own.
        count: Counts the tokens of its forwards.
    """

    def __init__(self, student: torch.nn.Module, compile: bool = False,
                 count: Callable[..., None] = _no_count) -> None:
        super().__init__(count)
        self.model = _whole_copy(student) if is_partitioned(student) else copy.deepcopy(student)
        if compile:
            self.model.compile(dynamic=True)
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def to(self, device: torch.device) -> SnapshotTeacher:
        self.model.to(device)
        return self

    def forward_logits(self, inputs: dict) -> Tensor:
        return self.model(input_ids=inputs["input_ids"],
                          attention_mask=inputs["attention_mask"]).logits

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state)


class AdapterOffTeacher(LiveTeacher):
    """The student itself with its LoRA adapter switched off: no second copy in memory.

    Valid as a snapshot teacher because the LoRA plugin folds the adapter into the frozen base
    weights at the snapshot (and restarts the adapter from zero), so "adapter off" is exactly
    the snapshot.

    Args:
        peft_model: The peft-wrapped student.
        count: Counts the tokens of its forwards.
    """

    def __init__(self, peft_model: torch.nn.Module, count: Callable[..., None] = _no_count) -> None:
        super().__init__(count)
        self.model = peft_model

    def forward_logits(self, inputs: dict) -> Tensor:
        with eval_mode(self.model), self.model.disable_adapter():
            return self.model(input_ids=inputs["input_ids"],
                              attention_mask=inputs["attention_mask"]).logits


def snapshot_teacher(context: FitContext, methods: list) -> LiveTeacher:
    """The live teacher at the snapshot: the one a method supplies (``make_teacher``; LoRA's
    adapter-off student), else a frozen copy of the student on its device, compiled like the
    student when ``context.compile``; its forwards counted by ``context.add_cost``."""
    for method in methods:
        teacher = method.make_teacher(context)
        if teacher is not None:
            return teacher
    if context.fsdp:
        raise ConfigError("a live teacher under FSDP would be a whole copy of the model on "
                          "every rank; use the cached teacher (KLSelfDistillation "
                          "cache_top_k > 0, configs/distill.yaml's default)")
    return SnapshotTeacher(context.student, compile=context.compile,
                           count=context.add_cost).to(context.device)


TEACHER_FILE = "snapshot_teacher.pt"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def save_teacher(teacher: Teacher, folder: Path, write: bool) -> dict | None:
    """Write the teacher's own weights to ``<folder>/snapshot_teacher.pt`` (atomically), and
    return what a checkpoint keeps instead of them: ``{"file", "sha256"}`` (``None`` for a
    teacher without weights of its own, such as the adapter-off student).

    Args:
        teacher: The live teacher.
        folder: Where the checkpoints go.
        write: Write the file (rank 0; the other processes only name it, and their
            checkpoint dictionaries are not saved).
    """
    state = teacher.state_dict()
    if state is None:
        return None
    path = Path(folder).resolve() / TEACHER_FILE
    if not write:
        return {"file": str(path), "sha256": None}
    atomic_write(path, lambda fh: torch.save(state, fh))
    return {"file": str(path), "sha256": _sha256(path)}


def read_teacher(reference: dict, near: Path | None) -> dict:
    """The weights ``save_teacher`` wrote, from ``near`` (the folder of the checkpoint being
    resumed, so that a moved run folder still resumes) or else the recorded path, checked
    against the recorded sha256.

    Raises:
        ModelLoadError: no such file, or one whose content is not the recorded one.
    """
    recorded = Path(reference["file"])
    candidates = [*([Path(near) / recorded.name] if near is not None else []), recorded]
    path = next((c for c in candidates if c.is_file()), None)
    if path is None:
        raise ModelLoadError(
            f"the checkpoint's snapshot teacher {recorded} is missing (written beside the "
            "checkpoints at the first save after the snapshot); put it back beside the "
            "checkpoint, or start the run from scratch")
    if reference.get("sha256") and _sha256(path) != reference["sha256"]:
        raise ModelLoadError(f"the snapshot teacher {path} is not the one this checkpoint "
                             "was saved with (its sha256 differs); start the run from scratch")
    return torch.load(path, map_location="cpu", weights_only=True)


class SnapshotFile:
    """The fit's live snapshot teacher's weights beside the checkpoints: what a checkpoint
    keeps of them (``reference``), and a resumed teacher loaded from them (``restore``). The
    methods own their teachers; this keeps only a weak reference to the one last built, to
    write its weights once.
    """

    def __init__(self) -> None:
        self.saved: dict | None = None  # {"file", "sha256"} (the weights themselves before 0.2)
        self._teacher: weakref.ref | None = None

    @property
    def teacher(self) -> LiveTeacher | None:
        """The live teacher last built, while a method still holds it."""
        return self._teacher() if self._teacher is not None else None

    def built(self, teacher: LiveTeacher) -> LiveTeacher:
        """Note a teacher taken at a new snapshot (its weights not written yet)."""
        self._teacher, self.saved = weakref.ref(teacher), None
        return teacher

    def reference(self, folder: Callable[[], Path], write: bool) -> dict | None:
        """What a checkpoint keeps: the weights file, written at the first checkpoint after
        the snapshot (``save_teacher``); ``None`` while no method holds a live teacher with
        weights of its own.

        Args:
            folder: Where the checkpoints go (asked only when there is a file to write).
            write: Write the file (rank 0).
        """
        if self.saved is not None and "file" in self.saved:
            return self.saved
        teacher = self.teacher
        self.saved = None if teacher is None else save_teacher(teacher, folder(), write)
        return self.saved

    def restore(self, teacher: LiveTeacher, near: Path | None) -> LiveTeacher:
        """``teacher`` (built from the resumed student) with the snapshot's weights.

        Raises:
            ConfigError: the checkpoint holds no snapshot teacher (saved by a run without a
                live-teacher method).
        """
        if teacher.state_dict() is None:  # the adapter-off student: the weights are its own
            return teacher
        saved = self.saved
        if saved is None:
            raise ConfigError("this checkpoint holds no snapshot teacher (it was saved by a "
                              "run without a live-teacher method); start the run from scratch")
        teacher.load_state_dict(read_teacher(saved, near) if "file" in saved else saved)
        self._teacher = weakref.ref(teacher)
        if "file" not in saved:
            self.saved = None  # weights inside the checkpoint: written beside it at the next
        return teacher
