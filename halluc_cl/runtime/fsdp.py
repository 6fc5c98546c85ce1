"""FSDP over the student's transformer blocks (``configs/fsdp/``), for GPUs.

Lightning's ``FSDPStrategy`` makes the whole LightningModule one FSDP unit unless it is given
an ``auto_wrap_policy``: a set of module classes, which a YAML config cannot name for a model
it has not loaded. ``BlockFSDPStrategy`` takes them from the loaded model: the classes Hugging
Face lists in ``_no_split_modules`` (``LlamaDecoderLayer``, ``Gemma3DecoderLayer``), so that
each transformer block is one unit, gathered only around its own forward and backward.

What runs under it (docs/scaling.md): plain SFT and KL distillation with the cached teacher
(forwards of the sharded student only). What needs whole weights refuses it with a
``ConfigError``: a live teacher (it would be a whole copy on every rank), L2 and EWC (their
anchors and penalties are per whole parameter) and LoRA (its fold writes the base weights).
The saved ``model/`` comes from the strategy's full state dict (gathered to rank 0).

Lightning 2.6 refuses FSDP on CPU (``ValueError: The strategy `fsdp` requires a GPU
accelerator``) and torch's FSDP1 needs an accelerator device, so none of this runs on this
project's CPU machines; ``tools/gpu_check.sh`` runs it on a GPU.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

from lightning.pytorch.strategies import FSDPStrategy
from torch import nn

from halluc_cl.errors import ConfigError


def block_classes(model: nn.Module) -> set[type[nn.Module]]:
    """The classes of ``model``'s submodules that a submodule lists in ``_no_split_modules``
    (Hugging Face's transformer blocks), by name."""
    names = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or ())
    return {type(m) for m in model.modules() if type(m).__name__ in names}


def is_fsdp(trainer) -> bool:
    """Whether the trainer shards with FSDP."""
    return isinstance(getattr(trainer, "strategy", None), FSDPStrategy)


@contextmanager
def whole_root(trainer):
    """The parameters of the FSDP root unit (those outside every block: embeddings, final norm,
    head) whole inside the block, for the student's forwards outside a training or evaluation
    step (the snapshot's teacher cache and states); each block gathers its own in its forward.
    A no-op without FSDP."""
    if trainer is None or not is_fsdp(trainer):
        with nullcontext():
            yield
        return
    from torch.distributed.fsdp import FullyShardedDataParallel

    with FullyShardedDataParallel.summon_full_params(trainer.strategy.model, recurse=False,
                                                     writeback=False):
        yield


def student_state_dict(trainer) -> dict:
    """The student's whole weights from the strategy's full state dict (a collective: every
    rank calls; rank 0 gets them, the others an empty dict)."""
    prefix = "student."
    return {k[len(prefix):]: v for k, v in trainer.strategy.lightning_module_state_dict().items()
            if k.startswith(prefix)}


class BlockFSDPStrategy(FSDPStrategy):
    """``FSDPStrategy`` whose units are the model's transformer blocks (``block_classes``)
    unless an ``auto_wrap_policy`` is given; every other argument is ``FSDPStrategy``'s."""

    def setup(self, trainer) -> None:
        if self.root_device.type == "cpu":  # Lightning checks only its own "fsdp" strategy
            raise ConfigError("FSDP needs GPUs: Lightning refuses FSDP with accelerator=cpu "
                              "and torch's FSDP needs an accelerator device; on CPU use DDP "
                              "(--trainer.strategy ddp)")
        if "auto_wrap_policy" not in self.kwargs:
            from torch.distributed.fsdp.wrap import ModuleWrapPolicy

            classes = block_classes(self.lightning_module)
            if classes:
                self.kwargs["auto_wrap_policy"] = ModuleWrapPolicy(classes)
        super().setup(trainer)
