"""LoRA (Hu et al. 2021) through peft: only low-rank adapters on chosen layer groups train.

YAML::

    model:
      methods:
        - class_path: halluc_cl.methods.LoRA
          init_args: {rank: 8, alpha: 16, groups: [attention, mlp]}

The student is wrapped with ``peft.get_peft_model`` before training (this plugin's setup runs
before every other plugin's). At the snapshot the adapter is folded into the frozen base
weights and its ``B`` matrices reset to zero, so with a distillation plugin the teacher is the
student with the adapter switched off — the snapshot, with no second copy of the model.
"""

from __future__ import annotations

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer

from halluc_cl.errors import ConfigError
from halluc_cl.lm.param_groups import select
from halluc_cl.methods.base import Method
from halluc_cl.methods.context import FitContext
from halluc_cl.methods.teacher import AdapterOffTeacher

LINEAR_TYPES = ("Linear", "Conv1D")  # torch.nn.Linear and GPT-2's transposed Conv1D


class LoRA(Method):
    """Wraps the student in a peft LoRA model.

    Args:
        rank: Adapter rank r (≥ 1).
        alpha: LoRA α; the update is scaled by α / r.
        groups: Layer groups that get adapters (``attention``, ``mlp``, ``layers[a:b]``,
            ``regex:<pattern>``); only their linear layers are adapted.
        dropout: Dropout on the adapter input.
    """

    name = "lora"
    setup_order = 0

    def __init__(self, rank: int = 8, alpha: float = 16.0,
                 groups: list[str] = ["attention", "mlp"],  # noqa: B006 (jsonargparse literal)
                 dropout: float = 0.0) -> None:
        if rank < 1:
            raise ConfigError(f"LoRA rank must be >= 1, got {rank}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"LoRA dropout must be in [0, 1), got {dropout}")
        if not groups:
            raise ConfigError("LoRA needs at least one layer group")
        self.rank, self.alpha, self.groups, self.dropout = rank, alpha, list(groups), dropout

    def target_modules(self, model: torch.nn.Module) -> list[str]:
        """Names of the linear layers of ``model`` in the chosen groups."""
        linear = [n for n, m in model.named_modules() if type(m).__name__ in LINEAR_TYPES]
        # a group is matched against "<module>." so parameter-style patterns apply
        dotted = select(model, self.groups, [n + "." for n in linear])
        return [n[:-1] for n in dotted]

    def setup(self, context: FitContext) -> None:
        student = context.student
        if context.fsdp:
            raise ConfigError("LoRA under FSDP is not supported (its fold writes whole base "
                              "weights); the adapters are small: use DDP")
        if isinstance(student, PeftModel):
            return  # already wrapped (the module's setup may run again on resume)
        targets = self.target_modules(student)
        is_gpt2 = student.config.model_type == "gpt2"
        config = LoraConfig(r=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout,
                            target_modules=targets, fan_in_fan_out=is_gpt2, bias="none")
        # under DeepSpeed the adapters take the base weights' dtype (one dtype for ZeRO's flat
        # buffers; its optimizer keeps fp32 masters); elsewhere peft keeps them in fp32
        on_deepspeed = context.zero_stage is not None
        context.student = get_peft_model(student, config, autocast_adapter_dtype=not on_deepspeed)

    def make_teacher(self, context: FitContext) -> AdapterOffTeacher | None:
        if context.zero_stage is not None:
            return None  # no fold under DeepSpeed: a frozen copy is the snapshot
        return AdapterOffTeacher(context.student, count=context.add_cost)

    @torch.no_grad()
    def on_snapshot(self, context: FitContext) -> None:
        """Fold the adapter into the base weights and restart it from zero.

        Not under DeepSpeed: its optimizer keeps fp32 master copies of the adapter that would
        overwrite the restart, so there the adapter goes on and the teacher is a frozen copy
        (ZeRO-2) or the cached teacher (ZeRO-3).
        """
        if context.zero_stage is not None:
            return
        optimizer_state = context.optimizer_state() if context.optimizer_state else {}
        for layer in context.student.modules():
            if not isinstance(layer, LoraLayer):
                continue
            for adapter in layer.active_adapters:
                base = layer.get_base_layer()
                base.weight += layer.get_delta_weight(adapter).to(base.weight.dtype)
                layer.lora_B[adapter].weight.zero_()
                for p in (layer.lora_A[adapter].weight, layer.lora_B[adapter].weight):
                    optimizer_state.pop(p, None)  # Adam moments of the old adapter are stale
