"""What one SFT step runs through the student: its forward (with the batch's extra inputs
in the same call), the loss normaliser of several processes, and what the methods'
penalties see of it (``methods/base.py``: ``StepOutputs``; a method that reads the teacher
runs it itself).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from halluc_cl.distributed import rank_and_world
from halluc_cl.facts.padding import stack_padded
from halluc_cl.facts.prompts import IGNORE_INDEX
from halluc_cl.methods.base import ExtraOutputs, StepOutputs


def loss_normaliser(labels: Tensor) -> dict:
    """Arguments that make the causal-LM loss this process's share of the global batch's
    token mean (``num_items_in_batch``: the answer tokens of all processes over their
    number, ``halluc_cl/distributed.py``); none in a single process."""
    _, world = rank_and_world()
    if world == 1:
        return {}
    count = (labels[:, 1:] != IGNORE_INDEX).sum().to(torch.float64).reshape(1)
    torch.distributed.all_reduce(count)
    return {"num_items_in_batch": count / world}


def answer_loss(logits: Tensor, labels: Tensor, normaliser: dict) -> Tensor:
    """transformers' causal-LM loss (``ForCausalLMLoss``: the cross-entropy summed over the
    labelled next-token positions, over their number or ``num_items_in_batch``) computed from
    those positions' logits only: one fp32 ``[answer tokens, vocabulary]`` tensor instead of
    fp32 copies of the whole ``[batch, length, vocabulary]`` logits."""
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    total = F.cross_entropy(logits[:, :-1][keep].float(), targets[keep], reduction="sum")
    return total / normaliser.get("num_items_in_batch", keep.sum())


def _forward(module, normaliser: dict, **inputs) -> tuple[Tensor, Tensor]:
    """``(loss, logits)`` of the student: the loss by transformers, or from the labelled
    positions only (``module.loss_positions == "answer"``)."""
    if module.loss_positions == "answer":
        labels = inputs.pop("labels")
        logits = module.student(**inputs).logits
        return answer_loss(logits, labels, normaliser), logits
    out = module.student(**inputs, **normaliser)
    return out.loss, out.logits


def student_forward(module, batch: dict, extra: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """``(SFT loss, logits, extra logits or None)`` of ``module.student`` on the SFT batch
    and, with ``extra``, on the batch's extra inputs in the same forward.

    The extra rows are stacked under the SFT rows (one padding-aware call instead of two:
    fewer, larger kernels). They carry no labels, so the loss is the SFT batch's alone.
    """
    normaliser = loss_normaliser(batch["labels"])
    if not extra:
        loss, logits = _forward(module, normaliser, input_ids=batch["input_ids"],
                                attention_mask=batch["attention_mask"], labels=batch["labels"])
        return loss, logits, None
    rows, width = batch["input_ids"].shape
    extra_ids = batch["extra_input_ids"]
    pad = module.tokenizer.pad_token_id
    loss, logits = _forward(
        module, normaliser,
        input_ids=stack_padded([batch["input_ids"], extra_ids], pad),
        attention_mask=stack_padded([batch["attention_mask"], batch["extra_attention_mask"]], 0),
        labels=stack_padded([batch["labels"], torch.full_like(extra_ids, IGNORE_INDEX)],
                            IGNORE_INDEX))
    module.add_cost(student=batch["extra_attention_mask"].sum())
    return loss, logits[:rows, :width], logits[rows:, :extra_ids.shape[1]]


def plugin_outputs(module, batch: dict, loss: Tensor, logits: Tensor,
                   extra_logits: Tensor | None) -> StepOutputs:
    """What the methods' ``penalty`` sees of this step."""
    outputs = StepOutputs(logits=logits, loss=loss,
                          sft_epoch=module.current_epoch - module.warmup_end_epoch)
    if extra_logits is not None:
        outputs.extra = ExtraOutputs(logits=extra_logits,
                                     attention_mask=batch["extra_attention_mask"],
                                     labels=batch["extra_labels"])
    return outputs
