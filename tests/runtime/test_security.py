"""Loading untrusted files: checkpoints load with ``weights_only=True`` (a pickled payload is
refused before it runs), and remote model code never runs unless asked for."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import pytest
import torch

from halluc_cl.cli import main
from halluc_cl.experiments.config_files import method_configs

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "halluc_cl"
TINY = ["--config", str(ROOT / "configs/world/tiny.yaml")]


def _configs(method: str) -> list[str]:
    return [a for p in method_configs(method) for a in ("--config", str(p))]


class Payload:
    """Unpickling this creates ``marker``: code that runs at load time."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def _evil_checkpoint(path: Path, marker: Path) -> Path:
    """A Lightning-shaped checkpoint with the payload where halluc-cl keeps its state."""
    torch.save({"epoch": 0, "global_step": 1, "pytorch-lightning_version": "2.6.6",
                "state_dict": {}, "halluc_cl": {"reference": Payload(marker)}}, path)
    return path


def test_package_loads_no_pickles_without_weights_only():
    calls = [(p, line) for p in PACKAGE.rglob("*.py")
             for line in p.read_text().splitlines() if "torch.load(" in line]
    assert all("weights_only=True" in line for _, line in calls), calls


def test_remote_code_only_when_asked():
    from halluc_cl.lm.loading import load_causal_lm, load_tokenizer

    for fn in (load_causal_lm, load_tokenizer):
        assert inspect.signature(fn).parameters["trust_remote_code"].default is False
    hits = [p for p in PACKAGE.rglob("*.py")
            if re.search(r"trust_remote_code\s*=\s*True", p.read_text())]
    assert hits == []


@pytest.mark.parametrize("verb", ["fit", "validate"])
def test_checkpoint_with_pickle_payload_is_refused(verb, tmp_path, tiny_model_dir, one_thread,
                                                   capsys, monkeypatch):
    marker = tmp_path / "pwned"
    ckpt = _evil_checkpoint(tmp_path / "evil.ckpt", marker)
    torch.load(ckpt, weights_only=False)  # the payload is live: a plain load runs it
    assert marker.exists()
    marker.unlink()
    # an explicit weights_only=True must win over torch's opt-out environment variable
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(SystemExit) as exc:
        main([verb, "--config", str(ROOT / "configs/sft.yaml"), *TINY,
              "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"),
              "--ckpt_path", str(ckpt)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"refusing to load checkpoint {ckpt}" in errors[0]
    assert "weights_only=True" in errors[0]
    assert not marker.exists()
    assert not (tmp_path / "runs").exists()  # the failed run leaves no folder behind


def test_trainer_checkpoint_io_refuses_payload(tmp_path, monkeypatch):
    """The Trainer's own checkpoint reader (fit / validate restore) forces weights_only=True,
    even when asked for False."""
    from halluc_cl.errors import ModelLoadError
    from halluc_cl.runtime.checkpoint_io import SafeCheckpointIO

    marker = tmp_path / "pwned"
    ckpt = _evil_checkpoint(tmp_path / "evil.ckpt", marker)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(ModelLoadError, match="refusing to load checkpoint .* io.open"):
        SafeCheckpointIO().load_checkpoint(ckpt, weights_only=False)
    assert not marker.exists()


@pytest.mark.parametrize("method", ["distill", "lora"])
def test_resume_loads_with_weights_only(method, tmp_path, tiny_model_dir, one_thread,
                                        monkeypatch):
    """Our checkpoints (tensors, plain dicts; teacher / LoRA state included) resume under
    ``weights_only=True``, and every checkpoint load asks for it."""
    loads = []
    real_load = torch.load

    def spy(*args, **kwargs):
        loads.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    def fit(*extra):
        main(["fit", *_configs(method), *TINY,
              "--trainer.logger.init_args.save_dir", str(tmp_path), "--data.extra_per_batch",
              "8" if method == "distill" else "0", "--artifacts.save_model", "false", *extra])

    fit("--trainer.max_epochs", "2")
    first = json.loads((tmp_path / method / "version_0/summary.json").read_text())
    monkeypatch.setattr(torch, "load", spy)
    fit("--trainer.max_epochs", "3",
        "--ckpt_path", str(tmp_path / method / "version_0/checkpoints/last.ckpt"))
    resumed = json.loads((tmp_path / method / "version_1/summary.json").read_text())
    assert loads and all(w is True for w in loads)
    assert resumed["epochs"] == 3 and resumed["history"][:2] == first["history"]
