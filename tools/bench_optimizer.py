"""AdamW step time alone on a model's parameters: PyTorch's default (``foreach``), the
per-tensor loop and ``fused``.

    python tools/bench_optimizer.py --model smollm2-135m-instruct

Random gradients are set once; each variant takes one untimed step, then ``--steps`` timed
ones. Prints one JSON line per variant (mean seconds per step).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from halluc_cl.lm.loading import load_causal_lm
from halluc_cl.synthetic.resolve import resolve

VARIANTS = {"default": {}, "for_loop": {"foreach": False}, "fused": {"fused": True}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    params = list(load_causal_lm(resolve(args.model)).parameters())
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    for name, kwargs in VARIANTS.items():
        opt = torch.optim.AdamW(params, lr=1e-4, **kwargs)
        opt.step()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            opt.step()
        print(json.dumps({"variant": name, "parameters": sum(p.numel() for p in params),
                          "step_s": round((time.perf_counter() - t0) / args.steps, 3)}))


if __name__ == "__main__":
    main()
