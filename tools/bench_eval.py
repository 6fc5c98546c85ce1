"""Held-out evaluation time: FactSFTModule's evaluation of the held-out Known split
(``eval_method=forward`` and ``generate``) vs one bare forward pass over the same tokens and vs
per-example ``model.generate``.

    python tools/bench_eval.py --model synthetic://default --out runs/bench/eval.json
    python tools/bench_eval.py --model synthetic://tiny --threads 1 --repeats 3   # smoke run

Prints and writes JSON: seconds of each path and the ratios ``eval_forward / bare_forward``
(the one-forward evaluation's overhead over the forward pass it cannot avoid) and
``per_example_generate / eval_forward`` (its speed-up over a naive loop), all measured in one
process on one machine.

What is timed (each path runs once untimed first; evaluations and the bare forward are then
timed ``--repeats`` times and the median is reported):

* ``eval_forward``: the module's real evaluation code path, called directly rather than
  through ``trainer.validate`` so that Lightning's loop machinery and the other two splits do
  not blur the number: ``on_validation_epoch_start``, then for every batch of the datamodule's
  held-out Known val loader (its collate included) ``module.validation_step`` under
  ``torch.no_grad`` with the module in eval mode, ``eval_method="forward"`` and
  ``want_prediction_text=False`` (what a fit with ``artifacts.save_predictions false`` runs).
  ``module.reference`` is set from the untimed first pass, as at the end of the warm-up, so the
  hallucination and abstention metrics are updated as in an SFT epoch. The metric ``compute``
  at the epoch end (a few scalars) is not timed.
* ``eval_generate``: the same with ``eval_method="generate"`` (batched greedy generation).
* ``bare_forward``: ``model(input_ids, attention_mask)`` under ``torch.no_grad`` in eval mode
  over one right-padded row per fact, its prompt + gold answer tokens (the least a
  teacher-forced check must read), padded beforehand; nothing else. The evaluation reads the
  same rows (one per alias) plus abstention-phrase rows only for wrong facts whose first
  answer token could start one.
* ``per_example_generate``: ``model.generate`` (greedy, ``max_new_tokens`` of the module, pad
  and EOS ids as in ``answering.greedy_answers``) on one unpadded prompt at a time. With
  ``--generate-limit N`` only the first N facts are timed and the time is extrapolated to the
  split (``per_example_generate_extrapolated`` says so).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path

import torch
import transformers

from halluc_cl.data.datamodule import FactDataModule
from halluc_cl.facts.padding import right_pad
from halluc_cl.synthetic.resolve import is_synthetic
from halluc_cl.train.module import FactSFTModule

SPLIT = "heldout_test"
# (n_train, n_heldout): configs/sft.yaml, and configs/world/tiny.yaml for the tiny world
SIZES = {"synthetic://tiny": (32, 16)}
DEFAULT_SIZES = (400, 200)


def run_eval(module: FactSFTModule, loader) -> float:
    """Seconds of one evaluation of the split through ``validation_step``."""
    t0 = time.perf_counter()
    with torch.no_grad():
        module.on_validation_epoch_start()
        for i, batch in enumerate(loader):
            module.validation_step(batch, i)
    return time.perf_counter() - t0


def read_accuracy(module: FactSFTModule) -> float:
    """The split's accuracy over the evaluations since the last reset; resets the metrics."""
    acc = float(module.accuracy[SPLIT].compute())
    module._reset_metrics()
    return acc


def forward_rows(batch: dict, pad_id: int, max_new_tokens: int) -> tuple[torch.Tensor, ...]:
    """One right-padded prompt + gold answer row per fact of the batch."""
    seqs = [prompt + cands[0] for prompt, cands in zip(batch["prompt_ids"], batch["candidates"])
            if 0 < len(cands[0]) <= max_new_tokens]
    return right_pad(seqs, pad_id)


def bare_forward(model, rows: list[tuple[torch.Tensor, ...]]) -> float:
    """Seconds of one forward pass over every row batch (no_grad, eval mode)."""
    t0 = time.perf_counter()
    with torch.no_grad():
        for ids, mask in rows:
            model(input_ids=ids, attention_mask=mask)
    return time.perf_counter() - t0


def per_example_generate(model, tokenizer, prompts: list[list[int]],
                         max_new_tokens: int) -> float:
    """Seconds of greedy ``generate`` on each prompt alone."""
    t0 = time.perf_counter()
    with torch.no_grad():
        for prompt in prompts:
            ids = torch.tensor([prompt])
            model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                           max_new_tokens=max_new_tokens, do_sample=False,
                           pad_token_id=tokenizer.pad_token_id,
                           eos_token_id=tokenizer.eos_token_id)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="synthetic://default")
    parser.add_argument("--source", default=None, help="fact source (default: the model's "
                        "synthetic world; required for other models)")
    parser.add_argument("--n_train", type=int, default=None,
                        help="SFT mix size (default: configs/sft.yaml, tiny: world/tiny.yaml)")
    parser.add_argument("--n_heldout", type=int, default=None, help="held-out Known facts")
    parser.add_argument("--eval_batch_size", type=int, default=256)
    parser.add_argument("--max_new_tokens", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--generate-limit", "--generate_limit", dest="generate_limit", type=int,
                        default=None, help="time per-example generate on the first N facts "
                        "only and extrapolate to the split")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench/eval.json")
    args = parser.parse_args()
    if args.source is None:
        if not is_synthetic(args.model):
            parser.error("--source is needed for a model that is not synthetic://<world>")
        args.source = args.model
    n_train, n_heldout = SIZES.get(args.model, DEFAULT_SIZES)
    args.n_train, args.n_heldout = args.n_train or n_train, args.n_heldout or n_heldout

    torch.set_num_threads(args.threads)
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    torch.manual_seed(args.seed)

    module = FactSFTModule(model=args.model, max_new_tokens=args.max_new_tokens,
                           eval_method="forward")
    module.want_prediction_text = False
    module.load_model()
    module.eval()  # as Lightning's validation loop does
    dm = FactDataModule(source=args.source, tokenizer=args.model, n_train=args.n_train,
                        n_heldout=args.n_heldout, eval_batch_size=args.eval_batch_size,
                        split_seed=args.seed)
    dm.load()
    loader = dm.val_dataloader()[dm.eval_split_names().index(SPLIT)]
    batches = list(loader)
    n_facts = sum(len(b["facts"]) for b in batches)
    model, tok = module.student, module.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    times: dict[str, list[float]] = {"eval_forward": [], "eval_generate": [], "bare_forward": []}
    accuracy = {}
    for method in ("forward", "generate"):
        module.eval_method = method
        module.reference = {}
        run_eval(module, loader)  # untimed: warm-up (stop-token table, kernels)
        # the reference of the end of the warm-up, so the hallucination metric runs too
        module.reference = {p["id"]: p["correct"] for p in module.last_predictions}
        module._reset_metrics()
        for _ in range(args.repeats):
            times[f"eval_{method}"].append(run_eval(module, loader))
        accuracy[method] = read_accuracy(module)

    rows = [forward_rows(b, pad, args.max_new_tokens) for b in batches]
    n_rows = sum(ids.shape[0] for ids, _ in rows)
    bare_forward(model, rows)  # untimed warm-up
    for _ in range(args.repeats):
        times["bare_forward"].append(bare_forward(model, rows))

    prompts = [p for b in batches for p in b["prompt_ids"]]
    limit = min(args.generate_limit or n_facts, n_facts)
    per_example_generate(model, tok, prompts[:1], args.max_new_tokens)  # untimed warm-up
    gen_timed = per_example_generate(model, tok, prompts[:limit], args.max_new_tokens)
    gen_s = gen_timed / limit * n_facts

    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "model": args.model, "source": args.source, "split": SPLIT, "facts": n_facts,
        "threads": torch.get_num_threads(), "eval_batch_size": args.eval_batch_size,
        "max_new_tokens": args.max_new_tokens, "repeats": args.repeats,
        "forward_rows": n_rows, "forward_width": max(ids.shape[1] for ids, _ in rows),
        "forward_tokens": sum(int(mask.sum()) for _, mask in rows),
        "eval_forward_s": round(med["eval_forward"], 4),
        "eval_generate_s": round(med["eval_generate"], 4),
        "bare_forward_s": round(med["bare_forward"], 4),
        "per_example_generate_s": round(gen_s, 4),
        "per_example_generate_timed_facts": limit,
        "per_example_generate_timed_s": round(gen_timed, 4),
        "per_example_generate_extrapolated": limit < n_facts,
        "eval_forward_over_bare_forward": round(med["eval_forward"] / med["bare_forward"], 3),
        "target_eval_forward_over_bare_forward": 1.25,
        "eval_generate_over_bare_forward": round(med["eval_generate"] / med["bare_forward"], 3),
        "per_example_generate_over_eval_forward": round(gen_s / med["eval_forward"], 2),
        "per_example_generate_over_eval_generate": round(gen_s / med["eval_generate"], 2),
        "eval_generate_over_eval_forward": round(med["eval_generate"] / med["eval_forward"], 2),
        "heldout_known_acc_forward": round(accuracy["forward"], 4),
        "heldout_known_acc_generate": round(accuracy["generate"], 4),
        "runs_s": {k: [round(t, 4) for t in v] for k, v in times.items()},
    }
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
