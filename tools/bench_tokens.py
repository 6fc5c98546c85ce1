"""SFT throughput: halluc-cl's training path (FactSFTModule + FactDataModule under a Lightning
Trainer, plain SFT, no regularizers) vs a plain PyTorch loop over the same weights and batches.

    python tools/bench_tokens.py --model synthetic://default --steps 300 --out runs/bench/tokens.json
    python tools/bench_tokens.py --model synthetic://tiny --steps 20 --threads 1   # smoke run

Prints and writes JSON: non-pad input tokens/s of each path and their ratio (halluc / plain),
all measured in one process on one machine.

What is timed:

* halluc-cl: ``Trainer.fit`` with the CLI's trainer defaults (``TRAINER_DEFAULTS``: reloaded
  dataloaders, no sanity check, ``log_every_n_steps``; a ``CSVLogger`` into a temporary folder;
  the ``InterruptCheckpoint`` callback), 1 warm-up epoch + as many SFT epochs as ``--steps``
  needs. A callback times the SFT-phase batches: for each batch, from the previous batch's
  ``on_train_batch_end`` (or, for the first timed batch of an epoch, its own
  ``on_train_batch_start``) to its ``on_train_batch_end``. So the time holds
  ``training_step``, backward, ``AdamW.step``, ``zero_grad``, logging, every batch hook and the
  loader's hand-over of the next batch, but not startup, the warm-up epoch, the epoch ends
  (dataloader rebuild, evaluation, snapshot) or the first ``--warmup_steps`` SFT steps.
  ``halluc_step_tokens_per_s`` counts ``on_train_batch_start`` -> ``on_train_batch_end`` only.
  Evaluation runs at every epoch end as in a real fit (outside the timed spans);
  ``--no_validation`` turns it off (``limit_val_batches=0``). That is safe for plain SFT: the
  warm-up reference it would set only feeds ``hallucination_rate``, and nothing in the
  training step reads it.
* plain: the same model loaded afresh, in train mode, ``AdamW`` with the same ``lr`` and
  ``weight_decay``, over the same collated batches (built beforehand by the datamodule's
  ``train_dataloader`` for each SFT epoch and checked equal to those the Trainer served):
  ``model(input_ids, attention_mask, labels)``, ``loss.backward()``, ``opt.step()``,
  ``opt.zero_grad()``. The first ``--warmup_steps`` steps are not timed. It runs once before
  and once after the fit (``--plain_rounds 2``) and the rate uses their mean time, so a
  drifting machine does not favour either side.

Tokens are the non-pad input tokens (``attention_mask.sum()``) of the timed batches, the same
for both paths. The progress bar is off (``--progress_bar`` turns it on) and no checkpoints
are written (both happen outside the training math and are set per run).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import torch
import transformers
from lightning.pytorch.loggers import CSVLogger

from halluc_cl.data.datamodule import FactDataModule
from halluc_cl.experiments.fit import TRAINER_DEFAULTS
from halluc_cl.lm.loading import load_causal_lm
from halluc_cl.synthetic.resolve import is_synthetic, resolve
from halluc_cl.train.interrupt import InterruptCheckpoint
from halluc_cl.train.module import FactSFTModule

# (n_train, n_heldout, batch_size): configs/sft.yaml, and configs/world/tiny.yaml for the tiny world
SIZES = {"synthetic://tiny": (32, 16, 16)}
DEFAULT_SIZES = (400, 200, 32)
BATCH_KEYS = ("input_ids", "attention_mask", "labels")


class SFTStepTimer(L.Callback):
    """Times the SFT-phase training batches of a fit (see the module docstring)."""

    def __init__(self, warmup_epochs: int, skip: int, steps: int) -> None:
        self.warmup_epochs, self.skip, self.steps = warmup_epochs, skip, steps
        self.sft_index = -1  # index of the current batch among all SFT-phase batches
        self.start = self.prev_end = 0.0
        self.prev_epoch = -1
        self.span_s = self.step_s = 0.0
        self.tokens = 0
        self.losses: list[torch.Tensor] = []
        self.batches: list[dict] = []  # every SFT-phase batch served, for the equality check

    def _timed(self) -> bool:
        return self.skip <= self.sft_index < self.skip + self.steps

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch < self.warmup_epochs:
            return
        self.sft_index += 1
        self.batches.append({k: batch[k] for k in BATCH_KEYS})
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch < self.warmup_epochs or not self._timed():
            return
        end = time.perf_counter()
        epoch = trainer.current_epoch
        first = self.prev_epoch != epoch  # first timed batch of this epoch
        self.span_s += end - (self.start if first else self.prev_end)
        self.step_s += end - self.start
        self.prev_end, self.prev_epoch = end, epoch
        self.tokens += int(batch["attention_mask"].sum())
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(loss.detach())


def sft_batches(dm: FactDataModule, warmup_epochs: int, sft_epochs: int) -> list[dict]:
    """The collated batches of the SFT epochs, in training order, from ``train_dataloader``."""
    batches = []
    for epoch in range(warmup_epochs, warmup_epochs + sft_epochs):
        dm.trainer = SimpleNamespace(current_epoch=epoch, reload_dataloaders_every_n_epochs=1)
        batches += list(dm.train_dataloader())
    dm.trainer = None
    return batches


def plain_loop(model_spec: str, batches: list[dict], skip: int, steps: int, lr: float,
               weight_decay: float) -> dict:
    """Time a bare PyTorch SFT loop (fresh weights, AdamW) over ``batches[skip:skip+steps]``."""
    model = load_causal_lm(resolve(model_spec), "float32").train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    seconds, tokens, losses = 0.0, 0, []  # losses: detached tensors, read after the loop
    for i, batch in enumerate(batches[:skip + steps]):
        t0 = time.perf_counter()
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    labels=batch["labels"])
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        if i >= skip:
            seconds += time.perf_counter() - t0
            tokens += int(batch["attention_mask"].sum())
            losses.append(out.loss.detach())
    return {"seconds": seconds, "tokens": tokens,
            "mean_loss": statistics.fmean(float(x) for x in losses)}


def halluc_fit(args, dm: FactDataModule, timer: SFTStepTimer, max_epochs: int) -> float:
    """Run the halluc-cl fit; returns its wall time (startup and evaluation included)."""
    module = FactSFTModule(
        model=args.model, methods=[], warmup_epochs=args.warmup_epochs,
        optimizer=functools.partial(torch.optim.AdamW, lr=args.lr,
                                    weight_decay=args.weight_decay))
    module.want_prediction_text = False  # as with artifacts.save_predictions false
    with tempfile.TemporaryDirectory() as tmp:
        trainer = L.Trainer(
            accelerator="cpu", devices=1, precision="32-true", max_epochs=max_epochs,
            reload_dataloaders_every_n_epochs=TRAINER_DEFAULTS["reload_dataloaders_every_n_epochs"],
            num_sanity_val_steps=TRAINER_DEFAULTS["num_sanity_val_steps"],
            log_every_n_steps=TRAINER_DEFAULTS["log_every_n_steps"],
            logger=CSVLogger(tmp, name="bench"), enable_checkpointing=False,
            enable_progress_bar=args.progress_bar, enable_model_summary=False,
            limit_val_batches=0 if args.no_validation else None,
            callbacks=[InterruptCheckpoint(), timer])
        t0 = time.perf_counter()
        trainer.fit(module, datamodule=dm)
        return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="synthetic://default")
    parser.add_argument("--source", default=None, help="fact source (default: the model's "
                        "synthetic world; required for other models)")
    parser.add_argument("--steps", type=int, default=300, help="timed SFT steps")
    parser.add_argument("--warmup_steps", type=int, default=5,
                        help="leading SFT steps not timed (both paths)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--n_train", type=int, default=None,
                        help="SFT mix size (default: configs/sft.yaml, tiny: world/tiny.yaml)")
    parser.add_argument("--n_heldout", type=int, default=None)
    parser.add_argument("--batch_size", type=int, default=None)
    parser.add_argument("--unknown_fraction", type=float, default=0.5)
    parser.add_argument("--warmup_epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--weight_decay", type=float, default=0.0)
    parser.add_argument("--plain_rounds", type=int, default=2, choices=(1, 2),
                        help="plain loop after the fit only (1) or before and after it (2)")
    parser.add_argument("--no_validation", action="store_true",
                        help="limit_val_batches=0 (no evaluation at epoch ends)")
    parser.add_argument("--progress_bar", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench/tokens.json")
    args = parser.parse_args()
    if args.source is None:
        if not is_synthetic(args.model):
            parser.error("--source is needed for a model that is not synthetic://<world>")
        args.source = args.model
    n_train, n_heldout, batch_size = SIZES.get(args.model, DEFAULT_SIZES)
    args.n_train = args.n_train or n_train
    args.n_heldout = args.n_heldout or n_heldout
    args.batch_size = args.batch_size or batch_size

    torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    for message in (".*does not have many workers", ".*smaller than the logging interval",
                    ".*LeafSpec"):
        warnings.filterwarnings("ignore", message)
    L.seed_everything(args.seed, verbose=False)

    dm = FactDataModule(source=args.source, tokenizer=args.model,
                        unknown_fraction=args.unknown_fraction, n_train=args.n_train,
                        n_heldout=args.n_heldout, batch_size=args.batch_size,
                        warmup_epochs=args.warmup_epochs, split_seed=args.seed)
    dm.load()
    per_epoch = len(sft_batches(dm, args.warmup_epochs, 1))
    sft_epochs = math.ceil((args.warmup_steps + args.steps) / per_epoch)
    batches = sft_batches(dm, args.warmup_epochs, sft_epochs)

    plain = []
    if args.plain_rounds == 2:
        plain.append(plain_loop(args.model, batches, args.warmup_steps, args.steps, args.lr,
                                args.weight_decay))
    timer = SFTStepTimer(args.warmup_epochs, args.warmup_steps, args.steps)
    fit_s = halluc_fit(args, dm, timer, args.warmup_epochs + sft_epochs)
    plain.append(plain_loop(args.model, batches, args.warmup_steps, args.steps, args.lr,
                            args.weight_decay))

    same = len(timer.batches) == len(batches) and all(
        torch.equal(a[k], b[k]) for a, b in zip(timer.batches, batches) for k in BATCH_KEYS)
    if not same:
        raise SystemExit("error: the Trainer served other batches than the datamodule built")
    tokens = plain[0]["tokens"]
    assert timer.tokens == tokens and len(timer.losses) == args.steps
    plain_s = statistics.fmean(p["seconds"] for p in plain)
    halluc_rate, step_rate = tokens / timer.span_s, tokens / timer.step_s
    plain_rate = tokens / plain_s
    result = {
        "model": args.model, "source": args.source, "threads": torch.get_num_threads(),
        "n_train": args.n_train, "batch_size": args.batch_size,
        "unknown_fraction": args.unknown_fraction, "lr": args.lr,
        "weight_decay": args.weight_decay, "batches_per_sft_epoch": per_epoch,
        "sft_epochs": sft_epochs, "warmup_steps": args.warmup_steps, "timed_steps": args.steps,
        "timed_tokens": tokens, "same_batches": same, "validation": not args.no_validation,
        "halluc_s": round(timer.span_s, 4), "halluc_step_s": round(timer.step_s, 4),
        "plain_s": round(plain_s, 4), "plain_s_rounds": [round(p["seconds"], 4) for p in plain],
        "halluc_ms_per_step": round(1000 * timer.span_s / args.steps, 3),
        "plain_ms_per_step": round(1000 * plain_s / args.steps, 3),
        "halluc_tokens_per_s": round(halluc_rate, 1),
        "halluc_step_tokens_per_s": round(step_rate, 1),
        "plain_tokens_per_s": round(plain_rate, 1),
        "ratio": round(halluc_rate / plain_rate, 4),
        "ratio_step_only": round(step_rate / plain_rate, 4),
        "target_ratio": 0.97,
        "halluc_mean_loss": round(statistics.fmean(float(x) for x in timer.losses), 4),
        "plain_mean_loss": [round(p["mean_loss"], 4) for p in plain],
        "halluc_fit_wall_s": round(fit_s, 2),
    }
    print(json.dumps(result, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
