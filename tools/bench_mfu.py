"""Benchmark (GPU): model FLOPs utilisation of SFT and distillation steps, 1.1B Llama, bf16.

    python tools/bench_mfu.py --out runs/bench/mfu.json

A randomly initialised Llama-shaped model (TinyLlama-1.1B: 22 layers x 2048, 32 heads, 4 KV
heads, MLP 5632, vocab 32 000) in bf16 with sdpa attention trains on random tokens
(``--seq`` 512, ``--batch`` 16) with fused AdamW. Modes, each eager and under
``torch.compile``:

- ``sft``: forward with labels, backward, optimizer step (the plain loop);
- ``distill``: the same plus a no-grad teacher forward (a frozen copy) and the KL
  self-distillation penalty of ``halluc_cl.methods.distill.divergence`` (λ=1, τ=0.5) on
  every position.

MFU = model FLOPs per second / peak. Model FLOPs per token: ``6·N + 12·L·d·T`` for a training
pass (N = parameters outside the input embedding, L layers, d width, T sequence length) and a
third of that for the teacher's forward; the peak is the dense bf16 figure of the card
(``--peak-tflops``, default 989 for H100/H200 SXM).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch


def build(args):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=32_000, hidden_size=2048, intermediate_size=5632,
                         num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4,
                         max_position_embeddings=2048, attn_implementation="sdpa")
    torch.manual_seed(0)
    return LlamaForCausalLM(config).to(device="cuda", dtype=torch.bfloat16), config


def flops_per_token(model, config, seq: int) -> float:
    n = sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()
    return 6 * n + 12 * config.num_hidden_layers * config.hidden_size * seq


def run_mode(mode: str, compiled: bool, args) -> dict:
    from halluc_cl.methods.distill import divergence

    model, config = build(args)
    teacher = copy.deepcopy(model).eval().requires_grad_(False) if mode == "distill" else None
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    forward = torch.compile(model) if compiled else model
    teach = (torch.compile(teacher) if compiled else teacher) if teacher is not None else None
    ids = torch.randint(0, config.vocab_size, (args.batch, args.seq), device="cuda")

    def step():
        out = forward(input_ids=ids, labels=ids)
        loss = out.loss
        if teach is not None:
            with torch.no_grad():
                t_logits = teach(input_ids=ids).logits
            loss = loss + divergence(out.logits, t_logits, 0.5, "forward").mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / args.steps
    per_token = flops_per_token(model, config, args.seq)
    if mode == "distill":
        per_token += per_token / 3  # the teacher's forward
    tokens = args.batch * args.seq
    achieved = per_token * tokens / dt
    result = {"mode": mode, "compiled": compiled, "step_s": dt, "tokens_per_s": tokens / dt,
              "tflops": achieved / 1e12, "mfu": achieved / (args.peak_tflops * 1e12),
              "max_memory_gib": torch.cuda.max_memory_allocated() / 2**30}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument("--modes", nargs="+", default=["sft", "distill"])
    parser.add_argument("--compile", choices=["both", "eager", "compiled"], default="both")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    variants = {"both": (False, True), "eager": (False,), "compiled": (True,)}[args.compile]
    rows = []
    for mode in args.modes:
        for compiled in variants:
            try:
                rows.append(run_mode(mode, compiled, args))
            except Exception as exc:  # noqa: BLE001 (one failed mode must not hide the others)
                rows.append({"mode": mode, "compiled": compiled,
                             "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"})
            print(json.dumps(rows[-1]), flush=True)
            torch.cuda.empty_cache()  # the mode's model and optimizer went out of scope
            torch.cuda.reset_peak_memory_stats()
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "batch": args.batch, "seq": args.seq, "peak_tflops": args.peak_tflops, "rows": rows}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
