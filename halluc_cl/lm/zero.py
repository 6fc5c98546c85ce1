"""DeepSpeed ZeRO awareness: which stage a fit runs under, and full weights when partitioned.

Under ZeRO-3 every rank holds only a shard of each parameter (``p.ds_id`` marks them; outside
a forward pass ``p.data`` is empty). Whatever needs whole weights (a teacher copy, a saved
model, folding a LoRA adapter) gathers them first; ZeRO-1/2 keep whole weights on every rank.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch


def deepspeed_stage(trainer) -> int | None:
    """The ZeRO stage of the trainer's DeepSpeed strategy, ``None`` for any other strategy."""
    strategy = getattr(trainer, "strategy", None)
    if type(strategy).__name__ != "DeepSpeedStrategy":
        return None
    return int(strategy.config.get("zero_optimization", {}).get("stage", 0))


def is_partitioned(model: torch.nn.Module) -> bool:
    """Whether ZeRO-3 has partitioned the model's parameters."""
    return any(hasattr(p, "ds_id") for p in model.parameters())


@contextmanager
def gathered(model: torch.nn.Module, modifier_rank: int | None = None):
    """Whole parameters inside the block (ZeRO-3); a no-op for unpartitioned models.

    Args:
        model: The (possibly partitioned) model.
        modifier_rank: Rank whose in-place changes are scattered back on exit (``None``:
            read only).
    """
    if not is_partitioned(model):
        with nullcontext():
            yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=modifier_rank):
        yield


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of the model's whole weights (gathered under ZeRO-3)."""
    with gathered(model):
        return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
