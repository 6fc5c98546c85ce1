"""Probe throughput: SliCKProbe's shared-prefill batched sampling vs a per-sample
``generate`` loop (one call per greedy answer and per sample) on the same facts.

    python tools/bench_probe.py --model synthetic://default --facts 32 --out runs/bench/probe.json
    python tools/bench_probe.py --model smollm2-135m-instruct --source geonames:// --facts 8

Prints and writes JSON: facts/s of each path and their ratio. The loop is timed on a subset
(``--loop_facts``) and both rates are per fact, so the ratio does not need the whole slow loop.
The batched probe runs twice, reading one shared copy of each few-shot prefix (where the
model's attention allows) and with a copy per row, and counts the facts both give the same
category.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from halluc_cl.data.sources import exemplar_pool, load_source
from halluc_cl.facts.prompts import PromptFormat
from halluc_cl.lm.loading import load_causal_lm, load_tokenizer
from halluc_cl.probing.sampling import PrefixCache
from halluc_cl.probing.slick import SliCKProbe, fact_prompts
from halluc_cl.synthetic.resolve import resolve


def loop_rate(probe: SliCKProbe, facts, max_new_tokens: int) -> float:
    """Facts/s of the naive path: ``generate`` once per greedy answer and once per sample."""
    model, tok = probe.model, probe.tokenizer
    t0 = time.perf_counter()
    for fact in facts:
        for text in fact_prompts(fact, probe.pool, probe.n_prompts, probe.k_shot, probe.seed,
                                 probe.fmt, probe.shared):
            ids = tok(text, return_tensors="pt", add_special_tokens=False)
            common = {"max_new_tokens": max_new_tokens, "pad_token_id": tok.pad_token_id,
                      "eos_token_id": tok.eos_token_id}
            model.generate(**ids, do_sample=False, **common)
            for _ in range(probe.n_samples):
                model.generate(**ids, do_sample=True, temperature=probe.temperature,
                               top_k=probe.top_k, **common)
    return len(facts) / (time.perf_counter() - t0)


def batched_rate(probe: SliCKProbe, facts, facts_per_batch: int) -> tuple[float, list[str]]:
    """Facts per second of ``probe_batch``, and the category it gave each fact."""
    t0, categories = time.perf_counter(), []
    for start in range(0, len(facts), facts_per_batch):
        categories += [f.category for f in probe.probe_batch(facts[start:start + facts_per_batch])]
    return len(facts) / (time.perf_counter() - t0), categories


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="synthetic://default")
    parser.add_argument("--source", default=None, help="fact source (default: the model's)")
    parser.add_argument("--facts", type=int, default=32)
    parser.add_argument("--loop_facts", type=int, default=2)
    parser.add_argument("--n_prompts", type=int, default=10)
    parser.add_argument("--k_shot", type=int, default=4)
    parser.add_argument("--n_samples", type=int, default=16)
    parser.add_argument("--max_new_tokens", type=int, default=8)
    parser.add_argument("--batch_prompts", type=int, default=16)
    parser.add_argument("--facts_per_batch", type=int, default=8)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--per_fact_exemplars", action="store_true",
                        help="draw exemplars per fact (no shared prefix)")
    parser.add_argument("--template", default=None, help="prompt template (default: the project's)")
    parser.add_argument("--out", default="runs/bench/probe.json")
    args = parser.parse_args()

    facts = load_source(args.source or args.model)
    probe_facts, exemplars = exemplar_pool(facts)
    spec = resolve(args.model)
    model, tok = load_causal_lm(spec, args.dtype).eval(), load_tokenizer(spec)
    probe = SliCKProbe(model, tok, exemplars, n_prompts=args.n_prompts, k_shot=args.k_shot,
                       n_samples=args.n_samples, max_new_tokens=args.max_new_tokens,
                       batch_prompts=args.batch_prompts,
                       prompt=PromptFormat(**({"template": args.template} if args.template else {})),
                       shared_exemplars=not args.per_fact_exemplars)
    todo = probe_facts[:args.facts]
    probe.probe_batch(todo[:1])  # warm-up
    batched, categories = batched_rate(probe, todo, args.facts_per_batch)
    probe.prefixes = PrefixCache(model, share=False)  # every row its own copy of the prefix
    probe.probe_batch(todo[:1])
    copies, categories_copies = batched_rate(probe, todo, args.facts_per_batch)
    naive = loop_rate(probe, todo[:args.loop_facts], args.max_new_tokens)
    result = {"model": args.model, "facts": len(todo), "loop_facts": args.loop_facts,
              "n_prompts": args.n_prompts, "k_shot": args.k_shot, "n_samples": args.n_samples,
              "max_new_tokens": args.max_new_tokens, "threads": torch.get_num_threads(),
              "shared_exemplars": probe.shared, "facts_per_batch": args.facts_per_batch,
              "batch_prompts": args.batch_prompts, "dtype": args.dtype,
              "batched_facts_per_s": round(batched, 3),
              "batched_prefix_copies_facts_per_s": round(copies, 3),
              "same_category_both_ways": sum(a == b for a, b in zip(categories,
                                                                     categories_copies)),
              "loop_facts_per_s": round(naive, 4),
              "speedup": round(batched / naive, 1)}
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
