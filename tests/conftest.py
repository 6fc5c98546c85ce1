"""Test settings: offline, and one shared cache so the tiny base model is built once per session."""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def halluc_cache(tmp_path_factory):
    """Point the synthetic-model cache at a per-session folder (unless CI provides one)."""
    if "HALLUC_CL_TEST_CACHE" in os.environ:
        path = os.environ["HALLUC_CL_TEST_CACHE"]
    else:
        path = str(tmp_path_factory.mktemp("halluc_cache"))
    old = os.environ.get("HALLUC_CL_CACHE")
    os.environ["HALLUC_CL_CACHE"] = path
    yield path
    if old is None:
        os.environ.pop("HALLUC_CL_CACHE", None)
    else:
        os.environ["HALLUC_CL_CACHE"] = old


@pytest.fixture(scope="session")
def tiny_model_dir(halluc_cache):
    """The tiny world's base model folder (built on first use)."""
    from halluc_cl.models.pretrain import build_base_model

    return build_base_model("tiny", verbose=False)


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread (and are not slowed by busy cores)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


TINY = "synthetic://tiny"


@pytest.fixture
def fit_tiny(tiny_model_dir, one_thread, tmp_path):
    """``fit_tiny(regularizers, epochs=3, lr=1e-3, ckpt_path=None, module_kwargs=None,
    **data_kwargs) -> (module, trainer)`` on the tiny world (no run folder, one thread)."""

    def run(regularizers, epochs: int = 3, lr: float = 1e-3, ckpt_path=None,
            module_kwargs: dict | None = None, **data_kwargs):
        import lightning as L

        from halluc_cl.data.datamodule import FactDataModule
        from halluc_cl.models.module import FactSFTModule

        L.seed_everything(0, verbose=False)
        module = FactSFTModule(TINY, regularizers=regularizers,
                               optimizer=lambda p: torch.optim.AdamW(p, lr=lr),
                               **(module_kwargs or {}))
        data = FactDataModule(**{"source": TINY, "tokenizer": TINY, "n_train": 32,
                                 "n_heldout": 16, "batch_size": 8, **data_kwargs})
        trainer = L.Trainer(max_epochs=epochs, reload_dataloaders_every_n_epochs=1,
                            num_sanity_val_steps=0, logger=False, enable_progress_bar=False,
                            enable_model_summary=False, default_root_dir=tmp_path,
                            enable_checkpointing=False, accelerator="cpu")
        trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
        return module, trainer

    return run
