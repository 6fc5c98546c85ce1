"""Extra distillation inputs: texts that carry no new fact, drawn from Known facts that are
neither held out nor in the SFT mix, so the evaluation set stays disjoint by construction.

Kinds:
    ``questions``: the prompt of another Known fact (no answer); the KL covers every prompt
        position, the last of which predicts the answer.
    ``qa``: prompt + gold answer of another Known fact (no cross-entropy on it).
    ``statements``: a pretraining-style statement of another Known fact (synthetic worlds only).
"""

from __future__ import annotations

import random
from typing import Literal

import torch

from halluc_cl.data.padding import right_pad
from halluc_cl.data.prompts import PromptFormat, encode_example
from halluc_cl.data.schema import Fact
from halluc_cl.errors import ConfigError

DistillKind = Literal["questions", "qa", "statements"]


def distill_pool(facts: list[Fact], splits: dict[str, list[Fact]],
                 unknown_categories: list[str]) -> list[Fact]:
    """Known facts outside every split; nothing about a held-out (subject, relation) pair."""
    used = {f.id for split in splits.values() for f in split}
    held = {(f.subject, f.relation) for f in splits["heldout_known"]}
    return [f for f in facts if f.category not in unknown_categories and f.id not in used
            and (f.subject, f.relation) not in held]


class DistillInputs:
    """Token sequences for distillation-only inputs, sampled per batch.

    Args:
        pool: Facts to draw from (see ``distill_pool``).
        kind: ``questions``, ``qa`` or ``statements``.
        tokenizer: The model's tokenizer.
        prompt: The prompt format.
        world: The synthetic world (needed for ``statements``).
    """

    def __init__(self, pool: list[Fact], kind: DistillKind, tokenizer, prompt: PromptFormat,
                 world=None) -> None:
        if not pool:
            raise ConfigError("no Known facts are left for distillation inputs (all are held "
                              "out or trained on); lower n_heldout or n_train")
        if kind == "statements" and world is None:
            raise ConfigError("distill_source=statements needs a synthetic:// source")
        if kind not in ("questions", "qa", "statements"):
            raise ConfigError(f"unknown distill_source {kind!r}: questions, qa or statements")
        self.pool, self.kind, self.tokenizer, self.world = pool, kind, tokenizer, world
        self.fmt = prompt

    def _tokens(self, fact: Fact, rng: random.Random) -> list[int]:
        if self.kind == "qa":
            return encode_example(self.tokenizer, self.fmt, fact.question, fact.object)["input_ids"]
        text = self.fmt.prompt(fact.question) if self.kind == "questions" \
            else self.world.statement(fact, rng)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def sample(self, n: int, rng: random.Random) -> dict[str, torch.Tensor]:
        """``n`` right-padded sequences as ``distill_input_ids`` / ``distill_attention_mask``."""
        seqs = [self._tokens(f, rng) for f in rng.sample(self.pool, min(n, len(self.pool)))]
        ids, mask = right_pad(seqs, self.tokenizer.pad_token_id)
        return {"distill_input_ids": ids, "distill_attention_mask": mask}
