"""FSDP (``runtime/fsdp.py``, ``configs/fsdp/``): what can be checked on CPU. Lightning
refuses FSDP without GPUs, so the fits themselves are ``tools/gpu_check.sh``'s."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.strategies import FSDPStrategy

from halluc_cl.errors import ConfigError
from halluc_cl.lm.loading import load_causal_lm
from halluc_cl.methods import L2ToAnchor, LoRA
from halluc_cl.methods.context import FitContext
from halluc_cl.methods.teacher import snapshot_teacher
from halluc_cl.runtime.fsdp import BlockFSDPStrategy, block_classes, is_fsdp, whole_root

ROOT = Path(__file__).resolve().parents[2]


def test_the_blocks_are_the_models_no_split_modules(tiny_model_dir):
    model = load_causal_lm(str(tiny_model_dir))
    classes = block_classes(model)
    assert {c.__name__ for c in classes} == set(model._no_split_modules)
    blocks = [m for m in model.modules() if type(m) in classes]
    assert len(blocks) == model.config.num_hidden_layers


def test_what_needs_whole_weights_refuses_fsdp(tiny_model_dir):
    context = FitContext(student=load_causal_lm(str(tiny_model_dir)), fsdp=True)
    with pytest.raises(ConfigError, match="FSDP shards them"):
        L2ToAnchor().setup(context)
    with pytest.raises(ConfigError, match="LoRA under FSDP"):
        LoRA().setup(context)
    with pytest.raises(ConfigError, match="live teacher under FSDP"):
        snapshot_teacher(context, [])


def test_without_fsdp_nothing_is_gathered():
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False)
    assert not is_fsdp(trainer) and not is_fsdp(None)
    with whole_root(trainer), whole_root(None):
        pass


@pytest.fixture
def own_environment():
    """Lightning's launcher writes ``MASTER_PORT``, ``LOCAL_RANK``... into this process's
    environment, which a later test's child processes would inherit (and take themselves
    for launched ranks): put it back, and close the process group."""
    before = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(before)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def test_fsdp_on_cpu_is_refused_before_the_first_step(tiny_model_dir, one_thread,
                                                       own_environment):
    """Why tests/distributed has no FSDP case. Lightning refuses its own FSDP strategy on CPU
    (when that check goes, a 2-process = 1-process FSDP case belongs there: docs/scaling.md);
    ``BlockFSDPStrategy``, which Lightning does not check, says so itself."""
    with pytest.raises(ValueError, match="requires a GPU accelerator"):
        L.Trainer(accelerator="cpu", devices=2, strategy=FSDPStrategy(), logger=False)
    from halluc_cl.data.datamodule import FactDataModule
    from halluc_cl.train.module import FactSFTModule

    module = FactSFTModule("synthetic://tiny")
    data = FactDataModule(source="synthetic://tiny", tokenizer="synthetic://tiny", n_train=32,
                          n_heldout=16, batch_size=8)
    module.connect(data)
    trainer = L.Trainer(accelerator="cpu", devices=1, strategy=BlockFSDPStrategy(),
                        max_epochs=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False)
    with pytest.raises(ConfigError, match="FSDP needs GPUs"):
        trainer.fit(module, datamodule=data)
    assert module.global_step == 0


@pytest.mark.parametrize("overlay", ["full_shard", "shard_grad_op"])
def test_the_fsdp_overlays_resolve(overlay, capsys):
    from halluc_cl.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["fit", "--config", str(ROOT / "configs/distill.yaml"), "--config",
              str(ROOT / f"configs/fsdp/{overlay}.yaml"), "--print_config"])
    out = capsys.readouterr().out
    assert stop.value.code == 0
    assert "class_path: halluc_cl.runtime.fsdp.BlockFSDPStrategy" in out
    assert f"sharding_strategy: {overlay.upper()}" in out
