"""Fits on the tiny synthetic world with chosen plugins (no run folder, one thread)."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from halluc_cl.data.datamodule import FactDataModule
from halluc_cl.models.module import FactSFTModule

TINY = "synthetic://tiny"


@pytest.fixture
def fit_tiny(tiny_model_dir, one_thread, tmp_path):
    """``fit_tiny(regularizers, epochs=3, lr=1e-3, **data_kwargs) -> (module, trainer)``."""

    def run(regularizers, epochs: int = 3, lr: float = 1e-3, ckpt_path=None, **data_kwargs):
        L.seed_everything(0, verbose=False)
        module = FactSFTModule(TINY, regularizers=regularizers,
                               optimizer=lambda p: torch.optim.AdamW(p, lr=lr))
        data = FactDataModule(**{"source": TINY, "tokenizer": TINY, "n_train": 32,
                                 "n_heldout": 16, "batch_size": 8, **data_kwargs})
        trainer = L.Trainer(max_epochs=epochs, reload_dataloaders_every_n_epochs=1,
                            num_sanity_val_steps=0, logger=False, enable_progress_bar=False,
                            enable_model_summary=False, default_root_dir=tmp_path,
                            enable_checkpointing=False, accelerator="cpu")
        trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
        return module, trainer

    return run
