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
"""

from __future__ import annotations

import random
from typing import Literal

import torch

from halluc_cl.errors import ConfigError
from halluc_cl.facts.padding import right_pad
from halluc_cl.facts.prompts import IGNORE_INDEX, PromptFormat, encode_example
from halluc_cl.facts.schema import Fact

ExtraKind = Literal["questions", "qa", "statements"]


class ExtraInputs:
    """Token sequences for the extra inputs, sampled per batch.

    Args:
        pool: Facts to draw from (``Splits.pool``).
        kind: ``questions``, ``qa`` or ``statements``.
        tokenizer: The model's tokenizer.
        prompt: The prompt format.
        world: The synthetic world (needed for ``statements``).
    """

    def __init__(self, pool: list[Fact], kind: ExtraKind, tokenizer, prompt: PromptFormat,
                 world=None) -> None:
        if not pool:
            raise ConfigError("no Known facts are left for extra inputs (all are held out, "
                              "about held-out subjects or trained on); lower n_heldout, "
                              "n_heldout_val or n_train")
        if kind == "statements" and world is None:
            raise ConfigError("extra_source=statements needs a synthetic:// source")
        if kind not in ("questions", "qa", "statements"):
            raise ConfigError(f"unknown extra_source {kind!r}: questions, qa or statements")
        self.pool, self.kind, self.tokenizer, self.world = pool, kind, tokenizer, world
        self.fmt = prompt

    def _example(self, fact: Fact, rng: random.Random) -> tuple[list[int], list[int]]:
        if self.kind == "qa":
            enc = encode_example(self.tokenizer, self.fmt, fact.question, fact.object)
            return enc["input_ids"], enc["labels"]
        text = self.fmt.prompt(fact.question) if self.kind == "questions" \
            else self.world.statement(fact, rng)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids, [IGNORE_INDEX] * len(ids)

    def sample(self, n: int, rng: random.Random) -> dict[str, torch.Tensor]:
        """``n`` right-padded sequences: ``extra_input_ids``, ``extra_attention_mask`` and
        ``extra_labels`` (answer tokens of ``qa`` inputs, else all ignored)."""
        examples = [self._example(f, rng) for f in rng.sample(self.pool, min(n, len(self.pool)))]
        ids, mask = right_pad([e[0] for e in examples], self.tokenizer.pad_token_id)
        labels, _ = right_pad([e[1] for e in examples], IGNORE_INDEX)
        return {"extra_input_ids": ids, "extra_attention_mask": mask, "extra_labels": labels}
