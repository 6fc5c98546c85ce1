"""FactDataModule: held-out / known / unknown splits, the unknown fraction, and collation.

Splits (docs/methods.md, "Protocol", ``data/splits.py``): ``heldout_val`` and ``heldout_test``
(Known facts never trained on: the first for choosing settings, the second for reporting;
subject-disjoint from every training-side input by default), ``known_train`` and
``unknown_train`` (the SFT mix, ``unknown_fraction`` of it Unknown), and the pool of Known facts
that extra inputs and replay draw from. During the first ``warmup_epochs`` epochs only
``known_train`` is served (the format warm-up).
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable
from typing import Literal

import lightning as L
import torch
from datasets import Dataset
from torch.utils.data import DataLoader

from halluc_cl.data.arguments import extra_select_of, validate_args
from halluc_cl.data.encoding import encode_facts
from halluc_cl.data.eval_splits import EvalSplits
from halluc_cl.data.extra_inputs import ExtraInputs, ExtraKind, ExtraSelect
from halluc_cl.data.resumable import EpochBatches
from halluc_cl.data.sources import load_source
from halluc_cl.data.splits import Disjoint, SplitSpec, shuffled_answers, split_facts
from halluc_cl.errors import ConfigError, DataError
from halluc_cl.facts.padding import length_bucketed, right_pad
from halluc_cl.facts.prompts import IGNORE_INDEX, PromptFormat, encode_example
from halluc_cl.facts.schema import Fact
from halluc_cl.lm.loading import load_tokenizer
from halluc_cl.synthetic.resolve import resolve, world_of

# Salts of the per-epoch random streams, each multiplied by the training seed and added to the
# epoch: distinct primes, so that no two streams of one fit coincide (their values are what
# every result so far was made with)
ANSWER_SHUFFLE_SALT = 31  # answer_shuffle=epoch: the Unknown facts' answers
ORDER_SALT = 7_919  # the order of the SFT rows
REPLAY_SALT = 15_485_863  # which pool facts are replayed
EXTRA_SALT = 104_729  # which extra inputs a batch gets


class FactDataModule(L.LightningDataModule):
    """Serves the SFT mix for training and the evaluation splits for validation/test.

    Args:
        source: ``synthetic://<world>``, a fact JSONL file, a folder with ``facts.jsonl``, or
            any other spec of ``data/sources.py`` (EntityQuestions, ``geonames://``,
            ``hf:`` tables).
        tokenizer: Model spec whose tokenizer is used (linked to ``model.model`` by the CLI).
        unknown_fraction: Share of Unknown facts in the SFT mix (0 = Known-only control).
        n_train: Facts in the SFT mix.
        n_heldout: Held-out Known facts of the test split (``heldout_test``, what tables
            report).
        n_heldout_val: Held-out Known facts of the validation split (``heldout_val``, what
            settings are chosen on; ``None``: as many as ``n_heldout``).
        heldout_disjoint: ``subject``: no fact of a held-out subject is in any
            training-side input; ``fact``: only the held-out (subject, relation) pairs are
            kept out (``data/splits.py``).
        known_categories: Categories that count as Known.
        unknown_categories: Categories that count as Unknown (new knowledge).
        pool_categories: Categories of the pool that extra inputs and replay draw from
            (``None``: ``known_categories``).
        prompt: Prompt format (default: ``PromptFormat()``).
        batch_size: Training batch size.
        eval_batch_size: Evaluation batch size.
        warmup_epochs: Leading epochs that train on ``known_train`` only.
        split_seed: Seed of the split (which facts are held out and trained on). The data
            order and the extra inputs follow ``seed_everything``, the training seed.
        extra_per_batch: Extra inputs from the pool attached to every SFT batch after the
            warm-up (0 = none); read by ``KLSelfDistillation(extra_weight>0)`` and
            ``ReplayLoss``.
        extra_source: Kind of those inputs: ``questions`` / ``qa`` of pool facts, or
            ``statements`` (synthetic worlds); ``ReplayLoss`` needs ``qa``.
        extra_select: Which pool facts a batch's extra inputs are (the distillation inputs
            and the replayed facts alike): a ``random`` sample, or the ``nearest`` to the
            batch's Unknown facts by the snapshot's hidden state at the last prompt token
            (``data/extra_inputs.py``; ranked when the snapshot is taken).
        distill_select: Deprecated name of ``extra_select`` (removed in 0.3.0).
        replay_fraction: Share of every SFT epoch made of replayed pool facts (question →
            answer), drawn afresh each epoch (replay by whole examples).
        unknown_answer: Train Unknown facts on this answer instead of their object (the "I
            don't know" relabel of Gekhman et al. 2024); must read as an abstention.
        answer_shuffle: The answer side of the Unknown facts (behaviour-cloning study):
            ``none`` trains each on its own object; ``fixed`` permutes the objects once
            among the Unknown training facts of each relation (a consistent, learnable
            mapping; evaluated against it); ``epoch`` permutes them afresh every SFT epoch
            (no learnable mapping, only the habit of answering).
        eval_max_facts: Evaluate at most this many facts of the training splits
            (``unknown_train``, ``known_train``; a fixed random subset). The held-out Known
            split is always evaluated in full. ``None``: all.
        length_buckets: Batch rows of similar length together: each epoch's shuffled rows
            are sorted by length within windows of this many batches, and the batches
            shuffled (``padding.length_bucketed``). 0 or 1: off.
    """

    def __init__(
        self,
        source: str = "synthetic://default",
        tokenizer: str = "synthetic://default",
        unknown_fraction: float = 0.5,
        n_train: int = 400,
        n_heldout: int = 200,
        n_heldout_val: int | None = None,
        heldout_disjoint: Disjoint = "subject",
        known_categories: list[str] = ["HighlyKnown"],  # noqa: B006 (jsonargparse needs a literal)
        unknown_categories: list[str] = ["Unknown"],  # noqa: B006
        pool_categories: list[str] | None = None,
        prompt: PromptFormat | None = None,
        batch_size: int = 32,
        eval_batch_size: int = 256,
        warmup_epochs: int = 1,
        split_seed: int = 0,
        extra_per_batch: int = 0,
        extra_source: ExtraKind = "questions",
        extra_select: ExtraSelect = "random",
        distill_select: ExtraSelect | None = None,
        replay_fraction: float = 0.0,
        unknown_answer: str | None = None,
        answer_shuffle: Literal["none", "fixed", "epoch"] = "none",
        eval_max_facts: int | None = None,
        length_buckets: int = 0,
    ) -> None:
        super().__init__()
        extra_select = extra_select_of(extra_select, distill_select)
        n_heldout_val = n_heldout if n_heldout_val is None else n_heldout_val
        validate_args(unknown_fraction=unknown_fraction, n_train=n_train, n_heldout=n_heldout,
                      n_heldout_val=n_heldout_val, batch_size=batch_size,
                      eval_batch_size=eval_batch_size, warmup_epochs=warmup_epochs,
                      replay_fraction=replay_fraction, unknown_answer=unknown_answer,
                      answer_shuffle=answer_shuffle, eval_max_facts=eval_max_facts,
                      length_buckets=length_buckets, extra_per_batch=extra_per_batch,
                      extra_select=extra_select)
        self.save_hyperparameters()
        self.answer_shuffle, self.eval_max_facts, self.length_buckets = (
            answer_shuffle, eval_max_facts, length_buckets)
        self.prompt = prompt or PromptFormat()
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.warmup_epochs, self.split_seed, self.order_seed = warmup_epochs, split_seed, split_seed
        self.source, self.tokenizer_spec, self.heldout_disjoint = source, tokenizer, heldout_disjoint
        self.spec = SplitSpec(unknown_fraction, n_train, n_heldout, n_heldout_val,
                              tuple(known_categories), tuple(unknown_categories),
                              tuple(pool_categories) if pool_categories else None,
                              heldout_disjoint, split_seed)
        self.extra_per_batch, self.extra_source, self.extra_select = (
            extra_per_batch, extra_source, extra_select)
        self.rank, self.world = 0, 1  # this process and the process count (``setup``)
        self.unknown_answer, self.replay_fraction = unknown_answer, replay_fraction
        # read by ``load`` (from ``setup``): the facts, their split and the tokenizer
        self.splits: dict[str, list[Fact]] | None = None
        self.split_sizes: dict[str, int] = {}
        self.replay_facts: list[Fact] = []
        self.tokenizer = None
        self.extra_inputs: ExtraInputs | None = None
        self._encoded: dict[str, Dataset] = {}
        self.evaluation: EvalSplits | None = None  # ``load``

    def prepare_data(self) -> None:
        """Build the base model of a ``synthetic://`` source or tokenizer if it is not cached
        yet (Lightning calls this once per node, before any process reads it)."""
        resolve(self.source)
        resolve(self.tokenizer_spec)

    def load(self) -> None:
        """Read the facts, split them and load the tokenizer; once (later calls return).

        ``setup`` calls it, so a Trainer verb reads the data where it runs, not when the
        config is parsed; code that uses the data module without a Trainer calls it first.

        Raises:
            ConfigError: The split cannot be drawn as configured (too few facts of a
                category, an infeasible replay fraction...).
        """
        if self.splits is not None:
            return
        # the tokenizer first: a model that cannot be loaded is named before the facts' problems
        self.tokenizer = load_tokenizer(resolve(self.tokenizer_spec))
        self.fmt = self.prompt.bind(self.tokenizer)  # the rendering of every prompt
        split = split_facts(load_source(self.source), self.spec)
        self.split_sizes, self.splits = split.sizes(), split.as_dict()
        if self.answer_shuffle == "fixed":
            self.splits["unknown_train"] = shuffled_answers(self.splits["unknown_train"], self.split_seed)
        self.evaluation = EvalSplits(self.splits, self.tokenizer, self.fmt,
                                     self.eval_batch_size, self.eval_max_facts,
                                     self.unknown_answer)
        if self.warmup_epochs and not self.splits["known_train"]:
            raise ConfigError("the warm-up needs Known training facts, but unknown_fraction=1")
        self.replay_facts = split.pool
        if self.replay_fraction and self.n_replay() > len(self.replay_facts):
            raise ConfigError(
                f"infeasible replay_fraction={self.replay_fraction}: {self.n_replay()} replayed "
                f"facts per epoch needed, {len(self.replay_facts)} pool facts are outside the "
                "splits")
        if self.extra_per_batch:
            self.extra_inputs = ExtraInputs(split.pool, self.extra_source, self.tokenizer,
                                            self.fmt, world_of(self.source),
                                            self.extra_select)

    def setup(self, stage: str) -> None:
        self.load()
        trainer = self.trainer
        self.rank, self.world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        if self.world > 1:
            self._check_shardable()
        # the data order follows the training seed; the split seed fixes only the split
        seed = os.environ.get("PL_GLOBAL_SEED")
        self.order_seed = int(seed) if seed is not None else self.split_seed

    def _check_shardable(self) -> None:
        """Refuse a batch size that would leave a process without rows in some batch: every
        batch of the one-process fit is split by rows among the ``world`` processes."""
        mix = len(self.splits["known_train"]) + len(self.splits["unknown_train"])
        epochs = {"warm-up": len(self.splits["known_train"]) if self.warmup_epochs else 0,
                  "SFT": mix + (self.n_replay() if self.replay_fraction else 0)}
        for phase, rows in epochs.items():
            last = rows % self.batch_size
            smallest = min(self.batch_size, rows) if last == 0 else last
            if rows and smallest < self.world:
                raise ConfigError(
                    f"with {self.world} processes every batch needs >= {self.world} rows (each "
                    f"process trains its share of the one-process batch), but a {phase} epoch "
                    f"of {rows} facts in batches of {self.batch_size} has one of {smallest}; "
                    "choose another data.batch_size")
        if 0 < self.extra_per_batch < self.world:
            raise ConfigError(f"data.extra_per_batch={self.extra_per_batch} is less than the "
                              f"{self.world} processes that share each batch's extra inputs")

    def protocol(self) -> dict:
        """What ``summary.json`` records of the split: seeds, disjointness and sizes."""
        return {"split_seed": self.split_seed, "order_seed": self.order_seed,
                "heldout_disjoint": self.heldout_disjoint, "split_sizes": self.split_sizes}

    def n_replay(self) -> int:
        """Replayed Known facts per SFT epoch."""
        mix = len(self.splits["known_train"]) + len(self.splits["unknown_train"])
        return round(self.replay_fraction / (1.0 - self.replay_fraction) * mix)

    def _answer(self, split: str, fact: Fact) -> str:
        if split == "unknown_train" and self.unknown_answer is not None:
            return self.unknown_answer
        return fact.object

    def encoded(self, split: str) -> Dataset:
        """The split (or ``replay``, the replay pool) tokenized for training (cached)."""
        if split not in self._encoded:
            facts = self.replay_facts if split == "replay" else self.splits[split]
            self._encoded[split] = encode_facts(
                [(f.question, self._answer(split, f)) for f in facts], self.tokenizer,
                self.fmt)
        return self._encoded[split]

    def _unknown_rows(self, epoch: int) -> list[dict]:
        if self.answer_shuffle != "epoch":
            return list(self.encoded("unknown_train"))
        facts = shuffled_answers(self.splits["unknown_train"],
                                 self.order_seed * ANSWER_SHUFFLE_SALT + epoch)
        return [dict(encode_example(self.tokenizer, self.fmt, f.question, f.object), idx=i)
                for i, f in enumerate(facts)]

    def _train_rows(self, epoch: int) -> list[dict]:
        rows = [dict(r, unknown=False, key=f"known_train:{r['idx']}")
                for r in self.encoded("known_train")]
        if epoch >= self.warmup_epochs:
            rows += [dict(r, unknown=True, key=f"unknown_train:{r['idx']}")
                     for r in self._unknown_rows(epoch)]
            if self.replay_fraction:
                replay = self.encoded("replay")
                rng = random.Random(self.order_seed * REPLAY_SALT + epoch)
                picked = rng.sample(range(len(replay)), self.n_replay())
                rows += [dict(replay[i], unknown=False, key=f"replay:{i}") for i in picked]
        rng = random.Random(self.order_seed * ORDER_SALT + epoch)
        rng.shuffle(rows)
        return length_bucketed(rows, self.batch_size, self.length_buckets, rng)

    def warmup_batches(self) -> int:
        """Training batches of one warm-up epoch (the Known training facts only)."""
        return math.ceil(len(self.splits["known_train"]) / self.batch_size)

    def cache_examples(self) -> list[tuple[str, dict]]:
        """Every example an SFT epoch can serve, by the ``keys`` its batches carry (the
        cached teacher's inputs): both training splits and, with replay, the replay pool."""
        splits = ["known_train", "unknown_train"] + (["replay"] if self.replay_fraction else [])
        return [(f"{s}:{r['idx']}", dict(r, unknown=s == "unknown_train"))
                for s in splits for r in self.encoded(s)]

    def rank_neighbours(self, states: Callable[[list[list[int]]], torch.Tensor]) -> None:
        """Rank the pool for every Unknown training fact (``distill_select=nearest``; called
        at the snapshot with the snapshot model).

        Args:
            states: Prompt token lists -> their ``[n, d]`` hidden states.
        """
        inputs = self.extra_inputs
        inputs.set_neighbours(states(inputs.prompt_ids(self.splits["unknown_train"])),
                              states(inputs.prompt_ids()), depth=self.extra_per_batch)

    def state_dict(self) -> dict:
        """The nearest-neighbour ranking, which only the snapshot model can remake."""
        inputs = self.extra_inputs
        return {} if inputs is None or inputs.neighbours is None else {
            "neighbours": inputs.neighbours}

    def load_state_dict(self, state: dict) -> None:
        if "neighbours" in state and self.extra_inputs is not None:
            self.extra_inputs.neighbours = state["neighbours"].cpu()

    def known_samples(self, n: int) -> list[dict]:
        """Up to ``n`` Known training facts, each as a one-example training batch (EWC)."""
        rows = [dict(r, unknown=False) for r in self.encoded("known_train")]
        random.Random(self.split_seed).shuffle(rows)
        return [self.collate_train([r]) for r in rows[:n]]

    def train_dataloader(self) -> EpochBatches:
        trainer = self.trainer
        if self.warmup_epochs and trainer is not None and trainer.reload_dataloaders_every_n_epochs != 1:
            raise ConfigError("the warm-up needs trainer.reload_dataloaders_every_n_epochs=1")
        epoch = trainer.current_epoch if trainer is not None else 0
        rows = self._train_rows(epoch)
        # this process's rows of every batch of the one-process fit (``halluc_cl/distributed``)
        rank, world = self.rank, self.world
        batches = [self.collate_train(rows[i:i + self.batch_size][rank::world])
                   for i in range(0, len(rows), self.batch_size)]
        if self.extra_inputs is not None and epoch >= self.warmup_epochs:
            rng = random.Random(self.order_seed * EXTRA_SALT + epoch)
            for start, batch in zip(range(0, len(rows), self.batch_size), batches):
                # the one-process batch's Unknown facts: every process draws the same inputs
                queries = [r["idx"] for r in rows[start:start + self.batch_size]
                           if r["key"].startswith("unknown_train:")]
                extra = self.extra_inputs.sample(self.extra_per_batch, rng, queries)
                batch.update({k: v[rank::world] for k, v in extra.items()})
        return EpochBatches(batches, epoch=epoch, seed=self.order_seed * ORDER_SALT + epoch)

    def collate_train(self, rows: list[dict]) -> dict:
        ids, mask = right_pad([r["input_ids"] for r in rows], self.tokenizer.pad_token_id)
        labels, _ = right_pad([r["labels"] for r in rows], IGNORE_INDEX)
        batch = {"input_ids": ids, "attention_mask": mask, "labels": labels,
                 "is_unknown": torch.tensor([r["unknown"] for r in rows])}
        if all("key" in r for r in rows):
            batch["keys"] = [r["key"] for r in rows]  # example identity (cached teacher)
        return batch

    def eval_split_names(self) -> list[str]:
        """Names of the evaluation dataloaders, in order (empty splits are left out)."""
        return self.evaluation.names()

    def abstain_phrases(self) -> list[str]:
        """Answers that read as abstentions (``EvalSplits.abstain_phrases``)."""
        return self.evaluation.abstain_phrases()

    def check_context(self, limit: int, max_new_tokens: int, training: bool) -> None:
        """Every training example, and every evaluation prompt plus ``max_new_tokens``, must
        fit the model's context of ``limit`` positions (past it a fit fails deep inside the
        model); checked before any step runs.

        Raises:
            DataError: Naming the first fact that does not fit.
        """
        for split in ("known_train", "unknown_train") if training else ():
            lengths = [len(ids) for ids in self.encoded(split)["input_ids"]] \
                if self.splits[split] else []
            if lengths and max(lengths) > limit:
                i = lengths.index(max(lengths))
                fact = self.splits[split][self.encoded(split)[i]["idx"]]
                raise DataError(f"fact {fact.id!r} ({split}) is {lengths[i]} tokens as prompt + "
                                f"answer, more than the model's context of {limit} positions; "
                                "shorten it or leave it out of data.source")
        self.evaluation.check_context(limit, max_new_tokens)

    def val_dataloader(self) -> list[DataLoader]:
        return [self.evaluation.loader(s, self.rank, self.world) for s in self.eval_split_names()]

    def test_dataloader(self) -> list[DataLoader]:
        return self.val_dataloader()
