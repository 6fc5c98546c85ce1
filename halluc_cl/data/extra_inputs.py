"""Extra inputs attached to every SFT batch: texts that carry no new fact, drawn from the pool
of Known facts outside every split (``data/splits.py``; never about a held-out subject, or a
held-out (subject, relation) pair under ``heldout_disjoint: fact``).

Distillation (``KLSelfDistillation(extra_weight>0)``) and budget-matched replay
(``ReplayLoss``) read the same inputs from the same pool, so the two are compared at equal
inputs per batch.

Kinds:
    ``questions``: the prompt of a pool fact (no answer); the KL covers every prompt
        position, the last of which predicts the answer.
    ``qa``: prompt + gold answer of a pool fact; ``extra_labels`` mark the answer tokens
        (replay trains on them; distillation uses no labels).
    ``statements``: a pretraining-style statement of a pool fact (synthetic worlds only).

Selection (``data.extra_select``):
    ``random``: a fresh random sample of the pool for every batch.
    ``nearest``: the pool facts nearest to the batch's Unknown (new) facts, by the cosine
        similarity of the snapshot's hidden states at the last prompt token (the
        representation overlap that the mechanism study finds forgetting to follow): the
        first neighbour of every Unknown fact of the batch, then the second, … until the
        batch has its inputs. A batch without Unknown facts draws at random.
"""

from __future__ import annotations

import random
from typing import Literal

import torch
import torch.nn.functional as F

from halluc_cl.errors import ConfigError
from halluc_cl.facts.padding import right_pad
from halluc_cl.facts.prompts import IGNORE_INDEX, PromptFormat, encode_example, encode_prompts
from halluc_cl.facts.schema import Fact

ExtraKind = Literal["questions", "qa", "statements"]
ExtraSelect = Literal["random", "nearest"]


class ExtraInputs:
    """Token sequences for the extra inputs, sampled per batch.

    Args:
        pool: Facts to draw from (``Splits.pool``).
        kind: ``questions``, ``qa`` or ``statements``.
        tokenizer: The model's tokenizer.
        prompt: The prompt format.
        world: The synthetic world (needed for ``statements``).
        select: ``random`` or ``nearest`` (see the module docstring).
    """

    def __init__(self, pool: list[Fact], kind: ExtraKind, tokenizer, prompt: PromptFormat,
                 world=None, select: ExtraSelect = "random") -> None:
        if not pool:
            raise ConfigError("no Known facts are left for extra inputs (all are held out, "
                              "about held-out subjects or trained on); lower n_heldout, "
                              "n_heldout_val or n_train")
        if kind == "statements" and world is None:
            raise ConfigError("extra_source=statements needs a synthetic:// source")
        if kind not in ("questions", "qa", "statements"):
            raise ConfigError(f"unknown extra_source {kind!r}: questions, qa or statements")
        if select not in ("random", "nearest"):
            raise ConfigError(f"unknown extra_select {select!r}: random or nearest")
        self.pool, self.kind, self.tokenizer, self.world = pool, kind, tokenizer, world
        self.fmt, self.select = prompt, select
        self.neighbours: torch.Tensor | None = None  # [queries, depth] pool indices (nearest)

    @property
    def fixed(self) -> bool:
        """Whether a pool fact always gives the same input (``questions``, ``qa``), so that a
        teacher's outputs on it can be cached."""
        return self.kind != "statements"

    def prompt_ids(self, facts: list[Fact] | None = None) -> list[list[int]]:
        """The prompts of ``facts`` (default: the pool's), tokenized: the inputs whose states
        ``set_neighbours`` compares."""
        return encode_prompts(self.tokenizer, [self.fmt.prompt(f.question)
                                               for f in (self.pool if facts is None else facts)])

    @torch.no_grad()
    def set_neighbours(self, query_states: torch.Tensor, pool_states: torch.Tensor,
                       depth: int) -> None:
        """Rank the pool for each query by cosine similarity of their states.

        Args:
            query_states: ``[queries, d]``, the states of the facts whose batches draw
                (the Unknown training facts, by index).
            pool_states: ``[len(pool), d]``, in pool order.
            depth: Neighbours kept per query.
        """
        if pool_states.shape[0] != len(self.pool):
            raise ValueError(f"{pool_states.shape[0]} pool states for {len(self.pool)} facts")
        pool = F.normalize(pool_states.float(), dim=-1)
        queries = F.normalize(query_states.float(), dim=-1)
        depth = min(depth, len(self.pool))
        self.neighbours = torch.cat([(chunk @ pool.T).topk(depth, dim=-1).indices.cpu()
                                     for chunk in queries.split(1024)]).int() \
            if len(queries) else torch.zeros(0, depth, dtype=torch.int)

    def _nearest(self, n: int, queries: list[int], rng: random.Random) -> list[int]:
        """Up to ``n`` pool indices: each query's first neighbour, then its second, …; the
        shortfall (too few distinct neighbours) drawn at random from the rest."""
        ranked = self.neighbours[queries].T.flatten().tolist()  # rank-major order
        picked = list(dict.fromkeys(ranked))[:n]
        if len(picked) < min(n, len(self.pool)):
            taken = set(picked)
            rest = [i for i in range(len(self.pool)) if i not in taken]
            picked += rng.sample(rest, min(n, len(self.pool)) - len(picked))
        return picked

    def indices(self, n: int, rng: random.Random, queries: list[int] | None = None) -> list[int]:
        """The pool indices of one batch's ``n`` inputs.

        Args:
            n: Inputs per batch.
            rng: Random source (the epoch's).
            queries: The batch's Unknown training facts (indices into ``unknown_train``),
                which ``nearest`` draws neighbours of.

        Raises:
            RuntimeError: ``nearest`` before ``set_neighbours``.
        """
        if self.select == "nearest" and queries:
            if self.neighbours is None:
                raise RuntimeError("extra_select=nearest draws the neighbours the snapshot "
                                   "ranked; no snapshot has ranked them yet")
            return self._nearest(n, queries, rng)
        return rng.sample(range(len(self.pool)), min(n, len(self.pool)))

    def cache_examples(self) -> list[tuple[str, dict]]:
        """Every pool input by the ``extra_keys`` its batches carry (a cached teacher's
        inputs; ``fixed`` kinds only)."""
        if not self.fixed:
            raise ConfigError("extra_source=statements draws a new statement every time: a "
                              "teacher cache cannot hold its outputs")
        rng = random.Random(0)  # unused by the fixed kinds
        return [(f"pool:{i}", {"input_ids": self._example(f, rng)[0]})
                for i, f in enumerate(self.pool)]

    def collate(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        """Right-padded ``input_ids`` and ``attention_mask`` of ``cache_examples`` rows."""
        ids, mask = right_pad([r["input_ids"] for r in rows], self.tokenizer.pad_token_id)
        return {"input_ids": ids, "attention_mask": mask}

    def _example(self, fact: Fact, rng: random.Random) -> tuple[list[int], list[int]]:
        if self.kind == "qa":
            enc = encode_example(self.tokenizer, self.fmt, fact.question, fact.object)
            return enc["input_ids"], enc["labels"]
        text = self.fmt.prompt(fact.question) if self.kind == "questions" \
            else self.world.statement(fact, rng)
        ids = encode_prompts(self.tokenizer, [text])[0]
        return ids, [IGNORE_INDEX] * len(ids)

    def sample(self, n: int, rng: random.Random, queries: list[int] | None = None) -> dict:
        """``n`` right-padded sequences: ``extra_input_ids``, ``extra_attention_mask``,
        ``extra_labels`` (answer tokens of ``qa`` inputs, else all ignored) and
        ``extra_keys`` (``pool:<index>``; see ``indices`` for the arguments)."""
        picked = self.indices(n, rng, queries)
        examples = [self._example(self.pool[i], rng) for i in picked]
        ids, mask = right_pad([e[0] for e in examples], self.tokenizer.pad_token_id)
        labels, _ = right_pad([e[1] for e in examples], IGNORE_INDEX)
        return {"extra_input_ids": ids, "extra_attention_mask": mask, "extra_labels": labels,
                "extra_keys": [f"pool:{i}" for i in picked]}
