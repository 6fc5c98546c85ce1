"""Evaluation time of a finished fit under each ``eval_method`` and precision, with the
accuracies each gives (they must agree at fp32: ``hybrid`` gives ``generate``'s numbers).

    python tools/bench_eval_run.py runs/compare/real_smollm2_select/runs/sft/<cell>

Loads the fit's last checkpoint into its base model, rebuilds its data splits from the run's
``config.yaml`` and times ``answer_batch`` over every evaluation split, once per
(method, precision) in the order given (a warm-up pass first). Prints one JSON line each.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import yaml

from halluc_cl.data.datamodule import FactDataModule
from halluc_cl.facts.prompts import PromptFormat
from halluc_cl.lm.loading import load_causal_lm
from halluc_cl.synthetic.resolve import resolve
from halluc_cl.train.evaluation import answer_batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a fit's run folder (config.yaml, checkpoints/last.ckpt)")
    parser.add_argument("--methods", nargs="+", default=["hybrid", "generate"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run = Path(args.run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    data = dict(cfg["data"])
    data["prompt"] = PromptFormat(**(data.get("prompt") or {}))
    data["tokenizer"] = cfg["model"]["model"]  # linked from the model by the CLI, not saved
    dm = FactDataModule(**data)
    dm.load()
    state = torch.load(run / "checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    model = load_causal_lm(resolve(cfg["model"]["model"]))
    model.load_state_dict({k[len("student."):]: v for k, v in state["state_dict"].items()
                           if k.startswith("student.")})
    model.eval()
    max_new = cfg["model"].get("max_new_tokens", 8)

    def evaluate(method: str, precision: str) -> dict:
        acc = {}
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            for split in dm.eval_split_names():
                right = [c for b in dm._eval_loader(split)
                         for c in answer_batch(model, dm.tokenizer, b, max_new, method)[1]]
                acc[split] = round(sum(right) / len(right), 4)
        return acc

    evaluate(args.methods[0], args.precisions[0])  # warm-up
    for precision in args.precisions:
        for method in args.methods:
            t0 = time.perf_counter()
            acc = evaluate(method, precision)
            print(json.dumps({"method": method, "precision": precision,
                              "seconds": round(time.perf_counter() - t0, 2), "accuracy": acc}),
                  flush=True)


if __name__ == "__main__":
    main()
