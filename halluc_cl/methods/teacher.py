"""The frozen snapshot teacher, held outside the LightningModule's registered submodules
(docs/methods.md): not in the optimizer, not in the module's ``state_dict``, not partitioned by
ZeRO.

One interface (``Teacher``: logits on a batch), two live forms: a frozen copy of the student
(``SnapshotTeacher``) and, for a LoRA student, the student with its adapter off
(``AdapterOffTeacher``). The module holds the one live teacher of a fit, built at the snapshot
by ``snapshot_teacher`` and shared by every plugin that reads it. The third form, the cached
top-k log-probabilities (``methods/teacher_cache.py``), belongs to the ``KLSelfDistillation``
that fills it: it holds that plugin's positions at that plugin's temperature, which no other
plugin could read.
"""

from __future__ import annotations

import copy
import hashlib
from abc import ABC, abstractmethod
from pathlib import Path

import torch
from peft import PeftModel

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


class Teacher(ABC):
    """The model at the snapshot, read by the penalties through its logits."""

    @abstractmethod
    def logits(self, batch: dict) -> torch.Tensor:
        """Logits on ``batch`` (``input_ids``, ``attention_mask``): no graph, eval mode."""

    def to(self, device: torch.device) -> Teacher:
        """Move to ``device`` (a no-op for a teacher that shares the student's weights)."""
        return self

    def state_dict(self) -> dict | None:
        """Its own weights (``None``: none beyond the student's), which ``save_teacher``
        writes beside the checkpoints."""
        return None

    def load_state_dict(self, state: dict | None) -> None:
        """Restore what ``state_dict`` returned."""


class SnapshotTeacher(Teacher):
    """A frozen copy of the student taken at the end of the warm-up.

    Args:
        student: The model to copy.
        compile: Compile the copy's forward (``Module.compile``, dynamic shapes). Required
            for a student compiled in place: a deep copy carries the student's compiled call
            along, and compiling the copy gives it its own.
    """

    def __init__(self, student: torch.nn.Module, compile: bool = False) -> None:
        self.model = _whole_copy(student) if is_partitioned(student) else copy.deepcopy(student)
        if compile:
            self.model.compile(dynamic=True)
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def to(self, device: torch.device) -> SnapshotTeacher:
        self.model.to(device)
        return self

    @torch.no_grad()
    def logits(self, batch: dict) -> torch.Tensor:
        return self.model(input_ids=batch["input_ids"],
                          attention_mask=batch["attention_mask"]).logits

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state)


class AdapterOffTeacher(Teacher):
    """The student itself with its LoRA adapter switched off: no second copy in memory.

    Valid as a snapshot teacher because the LoRA plugin folds the adapter into the frozen base
    weights at the snapshot (and restarts the adapter from zero), so "adapter off" is exactly
    the snapshot.

    Args:
        peft_model: The peft-wrapped student.
    """

    def __init__(self, peft_model: torch.nn.Module) -> None:
        self.model = peft_model

    @torch.no_grad()
    def logits(self, batch: dict) -> torch.Tensor:
        with eval_mode(self.model), self.model.disable_adapter():
            return self.model(input_ids=batch["input_ids"],
                              attention_mask=batch["attention_mask"]).logits


def snapshot_teacher(context: FitContext, methods: list) -> Teacher:
    """The live teacher at the snapshot: the one a method supplies (``make_teacher``; LoRA's
    adapter-off student), else a frozen copy of the student on its device, compiled like the
    student when ``context.compile``."""
    for method in methods:
        teacher = method.make_teacher(context)
        if teacher is not None:
            return teacher
    if context.fsdp:
        raise ConfigError("a live teacher under FSDP would be a whole copy of the model on "
                          "every rank; use the cached teacher (KLSelfDistillation "
                          "cache_top_k > 0, configs/distill.yaml's default)")
    return SnapshotTeacher(context.student, compile=context.compile).to(context.device)


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
