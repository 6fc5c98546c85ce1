"""GPU check: every method for a few steps under DeepSpeed ZeRO-2, ZeRO-3 and FSDP, one line
each.

    bash tools/gpu_check.sh          # on a CUDA machine (installs carried wheels, then this)

Each combination is a real fit (``halluc_cl.api.fit``, in this process, one after the other)
of the method's configs (``config_files.method_configs``) + ``configs/world/tiny.yaml`` +
the strategy's overlay (``STRATEGIES``) for two epochs (the warm-up, then SFT with the plugin).
A line reads ``ok`` with the run's decline, new-fact accuracy and wall time, ``refused`` with
the one-line error for combinations halluc-cl declines on purpose (anchors under ZeRO-3 and
FSDP, LoRA under FSDP), or ``FAILED`` with the error.
"""

from __future__ import annotations

import contextlib
import io
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["sft", "distill", "distill_cached", "ewc", "l2", "freeze_attention_only", "lora"]
STRATEGIES = {"zero2": "configs/deepspeed/zero2.yaml", "zero3": "configs/deepspeed/zero3.yaml",
              "fsdp": "configs/fsdp/full_shard.yaml"}
# anchors need whole weights; LoRA's fold writes them
REFUSED = {("ewc", "zero3"), ("l2", "zero3"), ("ewc", "fsdp"), ("l2", "fsdp"), ("lora", "fsdp")}


def configs(method: str) -> list[str]:
    from halluc_cl.experiments.config_files import method_configs

    return [str(p) for p in method_configs(method)]


def run(method: str, stage: str, out: Path) -> str:
    from halluc_cl import api
    from halluc_cl.errors import HallucError

    args = []
    for c in [*configs(method), "configs/world/tiny.yaml", STRATEGIES[stage]]:
        args += ["--config", str(ROOT / c)]
    args += ["--trainer.max_epochs", "2", "--trainer.devices", "1",
             "--trainer.enable_progress_bar", "false", "--artifacts.save_model", "true",
             "--trainer.logger.init_args.save_dir", str(out),
             "--trainer.logger.init_args.name", f"{method}_{stage}"]
    t0 = time.perf_counter()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            summary = api.fit(*args)
    except HallucError as exc:  # a user error, as ``halluc-cl`` would print it
        tag = "refused" if (method, stage) in REFUSED else "FAILED"
        return f"{tag}: {' '.join(str(exc).split())}"
    except Exception as exc:  # noqa: BLE001 (report every failure on one line)
        tb = traceback.extract_tb(exc.__traceback__)[-1]
        return f"FAILED: {type(exc).__name__}: {str(exc).splitlines()[0][:200]} " \
               f"({Path(tb.filename).name}:{tb.lineno})"
    run_dir = next(out.glob(f"{method}_{stage}/version_*"))
    saved = any((run_dir / "model" / f).is_file() for f in ("config.json", "adapter_config.json"))
    expected = "ok" if (method, stage) not in REFUSED else "ok (expected a refusal)"
    return (f"{expected}: decline {summary['heldout_test_decline']:.3f}, new-fact acc "
            f"{summary['final'].get('new_fact_acc', float('nan')):.3f}, model saved {saved}, "
            f"{time.perf_counter() - t0:.1f} s")


def main() -> None:
    import torch

    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for stage in STRATEGIES:
            for method in METHODS:
                line = run(method, stage, Path(tmp))
                print(f"{stage} {method:<22} {line}", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
