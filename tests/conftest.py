"""Test settings: offline, one shared cache so the tiny base model is built once per session,
and every ``summary.json`` the suite writes checked against ``SUMMARY_SCHEMA``."""

import fnmatch
import json
import os
import stat
import tempfile
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # one of ``-n`` workers (pyproject's addopts), one core each: a second thread per worker
    # would oversubscribe the cores, and the processes the tests start inherit it
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


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
    from halluc_cl.synthetic.base_model import build_base_model

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
        from halluc_cl.train.module import FactSFTModule

        L.seed_everything(0, verbose=False)
        module = FactSFTModule(TINY, methods=regularizers,
                               optimizer=lambda p: torch.optim.AdamW(p, lr=lr),
                               **(module_kwargs or {}))
        data = FactDataModule(**{"source": TINY, "tokenizer": TINY, "n_train": 32,
                                 "n_heldout": 16, "batch_size": 8, **data_kwargs})
        module.connect(data)
        trainer = L.Trainer(max_epochs=epochs, reload_dataloaders_every_n_epochs=1,
                            num_sanity_val_steps=0, logger=False, enable_progress_bar=False,
                            enable_model_summary=False, default_root_dir=tmp_path,
                            enable_checkpointing=False, accelerator="cpu")
        trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
        return module, trainer

    return run


class FullDisk:
    """Temporary files of atomic writes (``halluc_cl.io.atomic_write``) whose target
    matches ``pattern`` (a glob of the file name) are opened on ``/dev/full``, so that their
    writes fail with a real ``ENOSPC``; the first ``after`` of them are written normally.

    Attributes:
        failed: The temporary files whose writes were made to fail.
        before: The files of the folder of each failed write, just before it (name -> bytes).
    """

    def __init__(self, pattern: str, after: int = 0) -> None:
        self.pattern, self.after = pattern, after
        self.failed: list[str] = []
        self.before: list[dict[str, bytes]] = []

    def __getattr__(self, name: str):
        return getattr(tempfile, name)

    def mkstemp(self, *, dir, prefix, suffix):
        fail = False
        if fnmatch.fnmatch(prefix, f".{self.pattern}.*"):  # the temporary file of a match
            fail, self.after = self.after == 0, max(self.after - 1, 0)
        if fail:
            self.before.append({p.name: p.read_bytes() for p in Path(dir).iterdir()
                                if p.is_file()})
        fd, tmp = tempfile.mkstemp(dir=dir, prefix=prefix, suffix=suffix)
        if fail:
            os.close(fd)
            fd = os.open("/dev/full", os.O_WRONLY)
            self.failed.append(tmp)
        return fd, tmp


@pytest.fixture
def full_disk(monkeypatch):
    """``full_disk(pattern, after=0) -> FullDisk``: from now on, writes of files matching
    ``pattern`` fail as on a full disk (see ``FullDisk``)."""
    if not os.path.exists("/dev/full") or not stat.S_ISCHR(os.stat("/dev/full").st_mode):
        pytest.skip("needs the /dev/full device")

    def install(pattern: str, after: int = 0) -> FullDisk:
        from halluc_cl import io

        disk = FullDisk(pattern, after)
        monkeypatch.setattr(io, "tempfile", disk)
        return disk

    return install


_CHECKED: set[Path] = set()  # tests' tmp_path folders whose summaries are checked already


def invalid_summaries(root: Path) -> list[str]:
    """One line per way a ``summary.json`` under ``root`` departs from ``SUMMARY_SCHEMA``."""
    from halluc_cl.train.summary_schema import summary_errors

    problems = []
    for path in sorted(Path(root).rglob("summary.json")):
        if _CHECKED.intersection(path.parents):
            continue
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            problems.append(f"{path}: not JSON ({exc})")
            continue
        problems += [f"{path}: {error}" for error in summary_errors(summary)]
    return problems


def _fail_on(problems: list[str]) -> None:
    if problems:
        pytest.fail("summary.json departs from SUMMARY_SCHEMA (change build_summary, the schema "
                    "and SCHEMA_VERSION together):\n" + "\n".join(problems[:20]), pytrace=False)


@pytest.fixture(autouse=True)
def _summaries_follow_the_schema(request):
    """After each test, check the summaries in its ``tmp_path`` (if it has one)."""
    tmp = request.getfixturevalue("tmp_path") if "tmp_path" in request.fixturenames else None
    yield
    if tmp is not None:
        problems = invalid_summaries(tmp)
        _CHECKED.add(Path(tmp))
        _fail_on(problems)


@pytest.fixture(scope="session", autouse=True)
def _all_summaries_follow_the_schema(tmp_path_factory):
    """At the end of the session, check every summary under the session's temporary folder,
    including those of module-scoped fixtures (``tmp_path_factory``)."""
    yield
    _fail_on(invalid_summaries(tmp_path_factory.getbasetemp()))


@pytest.fixture
def summary_stub():
    """``summary_stub(**fields) -> dict``: a schema-valid ``summary.json`` of a 3-epoch fit,
    with ``fields`` replacing its own, for tests that stand in for a fit."""
    from halluc_cl.train.run_files import SCHEMA_VERSION

    def make(**fields) -> dict:
        evaluation = {"heldout_test_acc": 1.0, "heldout_val_acc": 1.0, "new_fact_acc": 1.0,
                      "known_train_acc": 1.0}
        summary = {
            "schema_version": SCHEMA_VERSION, "final": dict(evaluation),
            "peak": dict(evaluation), "heldout_test_decline": 0.0, "heldout_val_decline": 0.0,
            "snapshot": {"window": 3},
            "cost": {"student_tokens": 1, "teacher_tokens": 0, "train_token_passes": 3},
            "protocol": {"seed": 0, "config_hash": None}, "warmup_end": {"epoch": 0, **evaluation},
            "epochs": 3, "history": [{"epoch": e, **evaluation} for e in range(3)],
            "warmup_epochs": 1, "model": "synthetic://tiny", "methods": [], "seed": 0,
            "wall_time_s": 1.0, "versions": {k: "0" for k in ("halluc-cl", "torch", "lightning",
                                                               "transformers")},
            "git_commit": None,
        }
        return {**summary, **fields}

    return make


class FullLogits(TorchDispatchMode):
    """The fp32 tensors over the vocabulary (last dimension ``vocab``) of ``numel`` elements
    or more that the ops create, counted by storage (a view is not a copy): the batch's
    full-vocabulary logits and their copies."""

    def __init__(self, vocab: int, numel: int, weights: torch.nn.Module) -> None:
        super().__init__()
        self.vocab, self.numel, self.storages = vocab, numel, set()
        self.weights = {p.untyped_storage().data_ptr() for p in weights.parameters()}

    @property
    def count(self) -> int:
        return len(self.storages)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if (isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.dim()
                    and t.shape[-1] == self.vocab and t.numel() >= self.numel):
                self.storages.add(t.untyped_storage().data_ptr())
        self.storages -= self.weights  # the head's weight, transposed
        return out


@pytest.fixture
def vocab_tensors():
    """``FullLogits``: counts the fp32 tensors over the vocabulary that ops create."""
    return FullLogits
