"""halluc_cl.api: the commands as functions that return their results and raise (never print
an error line or exit), so a notebook can use them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from halluc_cl import api
from halluc_cl.errors import ConfigError


def _tiny(tmp_path: Path, *extra: str) -> list[str]:
    return ["--config", "sft", "--config", "world/tiny", "--trainer.max_epochs", "2",
            "--trainer.enable_progress_bar", "false", "--artifacts.save_model", "false",
            "--trainer.logger.init_args.save_dir", str(tmp_path), *extra]


def test_fit_returns_the_runs_summary_and_validate_its_metrics(tmp_path, tiny_model_dir,
                                                               one_thread):
    summary = api.fit(*_tiny(tmp_path))
    run = tmp_path / "sft" / "version_0"
    assert summary == json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == 2 and 0.0 <= summary["final"]["heldout_test_acc"] <= 1.0
    metrics = api.validate(*_tiny(tmp_path / "val", "--ckpt_path",
                                  str(run / "checkpoints" / "last.ckpt")))
    assert metrics["heldout_test_acc"] == summary["final"]["heldout_test_acc"]


def test_a_user_error_raises_instead_of_exiting(tmp_path):
    with pytest.raises(ConfigError, match="neither a file nor a shipped config"):
        api.fit("--config", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="neither a file nor a shipped config"):
        api.compare(methods={"sft": ["no/such.yaml"]}, out=str(tmp_path / "out"))


def test_pretrain_returns_the_cached_model_folder(tiny_model_dir):
    assert api.pretrain("tiny") == tiny_model_dir
    assert (api.pretrain("tiny") / "config.json").is_file()
