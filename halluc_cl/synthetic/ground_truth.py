"""Knowledge categories of the synthetic base model, read off its greedy answers."""

from __future__ import annotations

import dataclasses

from halluc_cl.facts.matching import exact_match
from halluc_cl.facts.prompts import PromptFormat
from halluc_cl.facts.schema import Fact
from halluc_cl.lm.generation import answer_prompts
from halluc_cl.synthetic.world import SyntheticWorld


def categorize_known(model, tokenizer, world: SyntheticWorld, facts: list[Fact],
                     fmt: PromptFormat) -> list[Fact]:
    """Assign Known facts a category from the base model's greedy answers to every question
    template of their relation (the SliCK idea with ground truth): all right -> HighlyKnown,
    some -> MaybeKnown, none -> WeaklyKnown. New-entity facts stay Unknown."""
    known = [f for f in facts if f.category != "Unknown"]
    questions = [(f, q) for f in known for q in world.questions(f)]
    answers = answer_prompts(model, tokenizer, [fmt.prompt(q) for _, q in questions])
    right: dict[str, list[bool]] = {}
    for (f, _), a in zip(questions, answers):
        right.setdefault(f.id, []).append(exact_match(a, f.aliases))
    out = []
    for f in facts:
        if f.category != "Unknown":
            p = sum(right[f.id]) / len(right[f.id])
            category = "HighlyKnown" if p == 1 else "MaybeKnown" if p > 0 else "WeaklyKnown"
            f = dataclasses.replace(f, category=category, p_correct=p)
        out.append(f)
    return out


def accuracy_report(model, tokenizer, facts: list[Fact], fmt: PromptFormat,
                    max_per_category: int = 2400) -> dict[str, float]:
    """Greedy exact match on each fact's own question, per category (at most
    ``max_per_category`` facts each, the first ones; ``n_<category>`` counts them all)."""
    report = {}
    for category in ("HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown"):
        everything = [f for f in facts if f.category == category]
        subset = everything[:max_per_category]
        if subset:
            answers = answer_prompts(model, tokenizer, [fmt.prompt(f.question) for f in subset])
            report[category] = sum(map(exact_match, answers, [f.aliases for f in subset])) \
                / len(subset)
            report[f"n_{category}"] = len(everything)
    return report
