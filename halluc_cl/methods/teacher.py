"""The frozen snapshot teacher, held outside the LightningModule's registered submodules
(docs/methods.md): not in the optimizer, not in the module's ``state_dict``, not partitioned by
ZeRO."""

from __future__ import annotations

import copy

import torch

from halluc_cl.errors import ConfigError
from halluc_cl.lm.modes import eval_mode
from halluc_cl.lm.zero import full_state_dict, is_partitioned


def _whole_copy(student: torch.nn.Module) -> torch.nn.Module:
    """An unpartitioned copy of a ZeRO-3 student (a deep copy would copy empty shards)."""
    from transformers import AutoModelForCausalLM

    if hasattr(student, "peft_config"):
        raise ConfigError("a live teacher of a LoRA student under ZeRO-3 is not supported; "
                          "use the cached teacher (KLSelfDistillation cache_top_k > 0)")
    state = full_state_dict(student)
    model = AutoModelForCausalLM.from_config(student.config)
    model.load_state_dict(state)
    model.to(next(student.parameters()).dtype)
    return model.to(next(student.parameters()).device)


class SnapshotTeacher:
    """A frozen copy of the student taken at the end of the warm-up.

    Args:
        student: The model to copy.
    """

    def __init__(self, student: torch.nn.Module) -> None:
        self.model = _whole_copy(student) if is_partitioned(student) else copy.deepcopy(student)
        if getattr(self.model, "_compiled_call_impl", None) is not None:
            self.model._compiled_call_impl = None  # the copy must not call the student's graph
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def to(self, device: torch.device) -> SnapshotTeacher:
        self.model.to(device)
        return self

    @torch.no_grad()
    def logits(self, batch: dict) -> torch.Tensor:
        """Teacher logits for a training batch (no graph, eval mode)."""
        return self.model(input_ids=batch["input_ids"],
                          attention_mask=batch["attention_mask"]).logits

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state)


class AdapterOffTeacher:
    """The student itself with its LoRA adapter switched off: no second copy in memory.

    Valid as a snapshot teacher because the LoRA plugin folds the adapter into the frozen base
    weights at the snapshot (and restarts the adapter from zero), so "adapter off" is exactly
    the snapshot.

    Args:
        peft_model: The peft-wrapped student.
    """

    def __init__(self, peft_model: torch.nn.Module) -> None:
        self.model = peft_model

    def to(self, device: torch.device) -> AdapterOffTeacher:
        return self  # shares the student's weights and device

    @torch.no_grad()
    def logits(self, batch: dict) -> torch.Tensor:
        with eval_mode(self.model), self.model.disable_adapter():
            return self.model(input_ids=batch["input_ids"],
                              attention_mask=batch["attention_mask"]).logits

    def state_dict(self) -> None:
        return None  # the base weights are in the student's own state

    def load_state_dict(self, state: dict | None) -> None:
        pass
