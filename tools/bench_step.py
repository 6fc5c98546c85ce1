"""Benchmark: training-step time of each regularizer relative to plain SFT, in one process.

    python tools/bench_step.py --out runs/bench/step_cpu.json                  # CPU, synthetic
    python tools/bench_step.py --device cuda --llama 1b --out step_gpu.json    # GPU, 1.1B Llama

Every method fits the same model on the same data through the real path (``FactSFTModule``
under a Lightning ``Trainer``): one warm-up epoch on Known facts (the snapshot, the cache or
the Fisher are built there and not timed), then ``--steps`` SFT steps, of which the first
``--skip`` are not timed. A callback times each SFT step (``on_train_batch_start`` to
``on_train_batch_end``, CUDA-synchronised). Evaluation is off (``limit_val_batches=0``).
``--llama`` swaps the synthetic base model for a randomly initialised Llama-shaped model
(``1b``: 22 layers x 2048, vocab 32 000, like TinyLlama-1.1B; ``125m``: 12 x 768) that reads
the synthetic world's tokens: only the shapes matter for timing.
Methods come from the regularizer overlays in ``configs/method/`` (plugins and data
settings), so they are the shipped configurations.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["sft", "distill_paper", "distill_paper_cached", "distill_cached", "distill",
           "distill_nearest", "ewc", "l2", "freeze_attention_only", "lora"]
LLAMA = {"125m": {"hidden_size": 768, "intermediate_size": 2048, "num_hidden_layers": 12,
                      "num_attention_heads": 12, "num_key_value_heads": 12},
         "1b": {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22,
                    "num_attention_heads": 32, "num_key_value_heads": 4}}


class StepTimer(L.Callback):
    """Seconds of every SFT-phase training step."""

    def __init__(self, warmup_epochs: int) -> None:
        self.warmup_epochs, self.times, self._t = warmup_epochs, [], 0.0

    def _sync(self, module) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize()

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self._sync(module)
        self._t = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self._sync(module)
        if trainer.current_epoch >= self.warmup_epochs:
            self.times.append(time.perf_counter() - self._t)


def plugins_and_data(method: str) -> tuple[list, dict]:
    """The plugins and data settings of ``configs/method/<method>.yaml``, or of the overlay
    ``method`` names if it ends in ``.yaml`` (a path from the repository root); none: sft."""
    if method == "sft":
        return [], {}
    from jsonargparse import ArgumentParser

    from halluc_cl.methods.base import Method

    path = ROOT / method if method.endswith(".yaml") else ROOT / "configs/method" / f"{method}.yaml"
    cfg = yaml.safe_load(path.read_text())
    parser = ArgumentParser()
    parser.add_argument("--plugins", type=list[Method])  # nested class_path specs too
    model_cfg = cfg.get("model", {})
    parsed = parser.parse_object({"plugins": model_cfg.get("methods",
                                                           model_cfg.get("regularizers", []))})
    return parser.instantiate_classes(parsed).plugins, dict(cfg.get("data", {}))


def llama_dir(size: str, tokenizer_spec: str, out: Path) -> str:
    """Save a random-init Llama of ``size`` with the synthetic tokenizer to ``out``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from halluc_cl.lm.loading import load_tokenizer
    from halluc_cl.synthetic.resolve import resolve

    tok = load_tokenizer(resolve(tokenizer_spec))
    config = LlamaConfig(vocab_size=32_000, max_position_embeddings=2048,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                         bos_token_id=tok.bos_token_id, **LLAMA[size])
    torch.manual_seed(0)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def time_method(method: str, model: str, source: str, args) -> dict:
    from halluc_cl.data.datamodule import FactDataModule
    from halluc_cl.facts.prompts import PromptFormat
    from halluc_cl.train.module import FactSFTModule

    plugins, data_kwargs = plugins_and_data(method)
    L.seed_everything(0, verbose=False)
    module = FactSFTModule(model, methods=plugins, dtype=args.dtype, compile=args.compile,
                           loss_positions=args.loss_positions,
                           optimizer=lambda p: torch.optim.AdamW(p, lr=1e-4, fused=args.device == "cuda"))
    data = FactDataModule(source=source, tokenizer=model, n_train=args.n_train,
                          n_heldout=args.n_heldout, batch_size=args.batch_size,
                          prompt=PromptFormat(**({"template": args.prompt_template}
                                                 if args.prompt_template else {})),
                          **data_kwargs)
    timer = StepTimer(warmup_epochs=1)
    module.connect(data)
    data.load()
    warmup_steps = -(-len(data.splits["known_train"]) // args.batch_size)
    trainer = L.Trainer(accelerator=args.device, devices=1, max_steps=warmup_steps + args.steps,
                        reload_dataloaders_every_n_epochs=1, limit_val_batches=0,
                        num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        precision=args.precision, callbacks=[timer])
    trainer.fit(module, datamodule=data)
    times = timer.times[args.skip:]
    return {"method": method, "steps_timed": len(times),
            "step_s_median": statistics.median(times), "step_s_mean": statistics.mean(times),
            # the process's peak resident memory so far (model loads included): run one
            # method per process to read it as that method's
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="synthetic://default")
    parser.add_argument("--source", default=None,
                        help="fact source (default: the synthetic model's world, or the default)")
    parser.add_argument("--prompt-template", default=None, help="data.prompt.template")
    parser.add_argument("--llama", choices=sorted(LLAMA), default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default=None, help="default: 32-true on CPU, bf16-true on CUDA")
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--skip", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--n-train", type=int, default=1200)
    parser.add_argument("--n-heldout", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--loss-positions", default="all", choices=["all", "answer"],
                        help="model.loss_positions")
    parser.add_argument("--compile", action="store_true",
                        help="model.compile: torch.compile the student and the live teacher")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.precision = args.precision or ("bf16-true" if args.device == "cuda" else "32-true")
    args.dtype = "bfloat16" if args.precision == "bf16-true" else "float32"
    source = args.source or (args.model if args.model.startswith("synthetic://")
                             else "synthetic://default")
    with tempfile.TemporaryDirectory() as tmp:
        model = llama_dir(args.llama, source, Path(tmp)) if args.llama else args.model
        rows = []
        for m in args.methods:
            rows.append(time_method(m, model, source, args))
            print(json.dumps(rows[-1]), flush=True)  # survives a timeout of the whole run
    base = next((r["step_s_median"] for r in rows if r["method"] == "sft"), None)
    for r in rows:
        r["ratio_to_sft"] = r["step_s_median"] / base if base else None
    device = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu x{args.threads}"
    result = {"device": device, "model": args.llama or args.model, "source": source,
              "precision": args.precision,
              "compile": args.compile,
              "batch_size": args.batch_size, "rows": rows}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
