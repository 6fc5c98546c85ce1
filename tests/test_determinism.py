"""Same config and seed -> same results (docs/reliability.md): two ``halluc-cl fit`` processes on
the tiny world, each with its own string-hash seed, must write the same summary and predictions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VOLATILE = ("wall_time_s",)  # the only summary field allowed to differ


def _fit(out: Path, hash_seed: str, cache: str) -> Path:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HALLUC_CL_CACHE": cache}
    proc = subprocess.run(
        [sys.executable, "-m", "halluc_cl.cli", "fit",
         "--config", str(ROOT / "configs/distill.yaml"),
         "--config", str(ROOT / "configs/world/tiny.yaml"),
         "--data.extra_per_batch", "8", "--trainer.max_epochs", "3",
         "--trainer.log_every_n_steps", "1", "--model.drift_layer", "-1",  # losses, drift
         "--trainer.enable_progress_bar", "false", "--artifacts.save_model", "false",
         "--trainer.logger.init_args.save_dir", str(out)],
        check=False, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / "distill" / "version_0"


def test_two_fits_with_one_seed_agree(tmp_path, tiny_model_dir, halluc_cache):
    a, b = _fit(tmp_path / "a", "1", halluc_cache), _fit(tmp_path / "b", "2", halluc_cache)
    summaries = [json.loads((run / "summary.json").read_text()) for run in (a, b)]
    for summary in summaries:
        for key in VOLATILE:
            summary.pop(key)
    assert summaries[0] == summaries[1]
    assert summaries[0]["epochs"] == 3 and summaries[0]["seed"] == 0
    preds = [sorted(p.name for p in (run / "predictions").iterdir()) for run in (a, b)]
    assert preds[0] == preds[1] and len(preds[0]) == 3
    for name in preds[0]:
        assert (a / "predictions" / name).read_bytes() == (b / "predictions" / name).read_bytes()
    metrics = (a / "metrics.csv").read_text()
    assert "train/loss" in metrics and "reg/distill" in metrics
    assert metrics == (b / "metrics.csv").read_text()
