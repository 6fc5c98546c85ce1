"""Test settings: offline, and one shared cache so the tiny base model is built once per session."""

import os

import pytest

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
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
