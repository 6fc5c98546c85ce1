"""Shared helpers of the resume and interruption tests: tiny fits through the real CLI, an
in-process signal at a chosen step (``interrupt_helpers.SignalAt``), summary comparison."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from halluc_cl.cli import main

ROOT = Path(__file__).resolve().parents[2]
HELPERS = Path(__file__).resolve().parent  # interrupt_helpers.py, importable as a class_path
TINY = ["--config", str(ROOT / "configs/world/tiny.yaml")]
# batch 8: the warm-up epoch has 2 steps (0, 1), each SFT epoch 4 (2-5, 6-9)
COMMON = ["--data.batch_size", "8", "--trainer.log_every_n_steps", "1",
          "--trainer.enable_model_summary", "false"]
VOLATILE = ("wall_time_s",)  # the only summary field allowed to differ


def signal_at(step: int, signal: str = "SIGTERM", **kwargs) -> list[str]:
    """``--trainer.callbacks`` that sends ``signal`` to this process when step ``step`` starts
    (with ``ready_file``: waits there for one from outside)."""
    spec = {"class_path": "interrupt_helpers.SignalAt",
            "init_args": {"step": step, "signal": signal, **kwargs}}
    return ["--trainer.callbacks", json.dumps([spec])]


def run_cli(args: list[str], capsys) -> tuple[int, list[str]]:
    """Run ``halluc-cl`` in-process: (exit code, its ``error:`` lines)."""
    capsys.readouterr()
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.startswith("error:")]


def summary(run: Path) -> dict:
    out = json.loads((run / "summary.json").read_text())
    for key in VOLATILE:
        out.pop(key)
    # the test's signal callback is part of the resumed fit's config, not the reference's
    out.get("protocol", {}).pop("config_hash", None)
    return out


def assert_same_run(resumed: Path, reference: Path) -> None:
    """Same summary, metrics.csv and predictions, and bit-identical final weights."""
    assert summary(resumed) == summary(reference)
    assert (resumed / "metrics.csv").read_text() == (reference / "metrics.csv").read_text()
    preds = sorted(p.name for p in (reference / "predictions").iterdir())
    assert sorted(p.name for p in (resumed / "predictions").iterdir()) == preds
    for name in preds:
        assert (resumed / "predictions" / name).read_bytes() == \
            (reference / "predictions" / name).read_bytes()
    a, b = (torch.load(r / "checkpoints/last.ckpt", weights_only=True) for r in (resumed, reference))
    assert a["global_step"] == b["global_step"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    # one last.ckpt, written over in place (no last-v1.ckpt), and no temporary files left
    names = [p.name for p in (resumed / "checkpoints").iterdir()]
    assert sorted(n for n in names if n.startswith(("last", "."))) == ["last.ckpt"]
