"""Budget-matched replay: cross-entropy on the gold answers of pool facts attached to every SFT
batch, the same extra inputs, in number and pool, that KL self-distillation reads.

YAML::

    model:
      methods:
        - class_path: halluc_cl.methods.ReplayLoss
          init_args: {weight: 1.0}
    data:
      extra_per_batch: 64
      extra_source: qa
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from halluc_cl.distributed import mean_over_ranks, rank_and_world
from halluc_cl.errors import ConfigError
from halluc_cl.facts.prompts import IGNORE_INDEX
from halluc_cl.methods.base import Method, StepOutputs
from halluc_cl.methods.context import FitContext


class ReplayLoss(Method):
    """λ · cross-entropy on the answer tokens of the batch's extra ``qa`` inputs.

    Unlike ``data.replay_fraction`` (replayed facts mixed into the epoch, which lengthens it),
    this adds ``data.extra_per_batch`` replayed facts to every SFT batch without changing the
    number of steps: the replay counterpart of distillation's extra inputs at equal cost in
    student tokens, and without a teacher forward.

    Args:
        weight: λ, the weight of the replay cross-entropy.
    """

    name = "replay"
    uses_extra_inputs = True

    def __init__(self, weight: float = 1.0) -> None:
        if weight <= 0:
            raise ConfigError(f"ReplayLoss weight must be > 0, got {weight}")
        self.weight = weight

    def setup(self, context: FitContext) -> None:
        data = context.data
        source = "qa" if data is None else data.extra_source
        if data is not None and data.extra_per_batch and source != "qa":
            raise ConfigError(f"ReplayLoss trains on answers: it needs data.extra_source qa, "
                              f"got {source!r}")

    def penalty(self, batch: dict, outputs: StepOutputs) -> Tensor | None:
        if outputs.extra is None:
            raise ConfigError("ReplayLoss needs data.extra_per_batch > 0")
        logits, labels = outputs.extra.logits[:, :-1], outputs.extra.labels[:, 1:]
        keep = labels != IGNORE_INDEX
        if rank_and_world()[1] == 1:
            if not keep.any():
                return None
            ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                 labels.reshape(-1), ignore_index=IGNORE_INDEX)
        else:  # the token mean over every process's extra inputs (``halluc_cl/distributed``)
            ce = mean_over_ranks(F.cross_entropy(logits[keep].float(), labels[keep],
                                                 reduction="none"))
        return None if ce is None else self.weight * ce
