"""The experiment's fact splits (docs/methods.md, "Protocol"): held-out validation and test sets,
the SFT mix, and the pool of Known facts for extra (distillation or replay) inputs.

    splits = split_facts(facts, SplitSpec(n_train=400, n_heldout=200, n_heldout_val=100))
    splits.heldout_test      # what every table reports
    splits.heldout_val       # what every setting is chosen on
    splits.pool              # Known facts outside every split, never about a held-out subject

Disjointness (``SplitSpec.disjoint``):

- ``subject`` (default): held-out facts are drawn subject by subject, and no fact of a
  held-out subject, of any relation or category, is in a training-side set (``known_train``,
  ``unknown_train``, ``pool``; the warm-up, replay, distillation inputs, the Fisher data and
  the L2 match batch all come from these). Validation and test subjects are disjoint too.
- ``fact``: only the held-out (subject, relation) pairs are kept out of training; other
  relations of a held-out subject may be trained on (the weaker protocol, for comparison).
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from typing import Literal

from halluc_cl.errors import ConfigError
from halluc_cl.facts.schema import Fact

Disjoint = Literal["subject", "fact"]
HELDOUT_SPLITS = ("heldout_val", "heldout_test")


@dataclass(frozen=True)
class SplitSpec:
    """What to split.

    Attributes:
        unknown_fraction: Share of Unknown facts in the SFT mix.
        n_train: Facts in the SFT mix.
        n_heldout: Held-out Known facts of the test split.
        n_heldout_val: Held-out Known facts of the validation split.
        known_categories: Categories that count as Known.
        unknown_categories: Categories that count as Unknown.
        pool_categories: Categories of the extra-input pool (``None``: the Known ones).
        disjoint: ``subject`` or ``fact`` (module docstring).
        seed: Seed of the split.
    """

    unknown_fraction: float = 0.5
    n_train: int = 400
    n_heldout: int = 200
    n_heldout_val: int = 200
    known_categories: tuple[str, ...] = ("HighlyKnown",)
    unknown_categories: tuple[str, ...] = ("Unknown",)
    pool_categories: tuple[str, ...] | None = None
    disjoint: Disjoint = "subject"
    seed: int = 0


@dataclass
class Splits:
    """The split facts; every list is in seeded random order."""

    heldout_val: list[Fact] = field(default_factory=list)
    heldout_test: list[Fact] = field(default_factory=list)
    known_train: list[Fact] = field(default_factory=list)
    unknown_train: list[Fact] = field(default_factory=list)
    pool: list[Fact] = field(default_factory=list)
    heldout_subjects: int = 0

    def as_dict(self) -> dict[str, list[Fact]]:
        """The evaluated and trained splits by name (the pool aside)."""
        return {"heldout_val": self.heldout_val, "heldout_test": self.heldout_test,
                "known_train": self.known_train, "unknown_train": self.unknown_train}

    def sizes(self) -> dict[str, int]:
        return {**{k: len(v) for k, v in self.as_dict().items()}, "pool": len(self.pool),
                "heldout_subjects": self.heldout_subjects}


def _take_by_subject(known: list[Fact], n: int, taken: set[str]) -> list[Fact]:
    """Up to ``n`` facts of whole subjects not in ``taken``, subjects in ``known``'s order;
    every subject touched joins ``taken`` (its other facts are then unusable)."""
    out: list[Fact] = []
    by_subject: dict[str, list[Fact]] = {}
    for f in known:
        by_subject.setdefault(f.subject, []).append(f)
    for subject, facts in by_subject.items():
        if len(out) >= n:
            break
        if subject in taken:
            continue
        taken.add(subject)
        out += facts[:n - len(out)]
    return out


def split_facts(facts: list[Fact], spec: SplitSpec) -> Splits:
    """Split ``facts`` into held-out, training and pool sets (module docstring).

    Raises:
        ConfigError: categories overlap, facts have no category, or the source cannot fill
            the requested sizes.
    """
    overlap = set(spec.known_categories) & set(spec.unknown_categories)
    if overlap:
        raise ConfigError(f"categories {sorted(overlap)} are both Known and Unknown")
    if facts and all(f.category is None for f in facts):
        raise ConfigError("the source's facts have no knowledge category; probe the model "
                          "first (halluc-cl probe --model ... --source ... --out F) and use "
                          "F as data.source")
    if spec.disjoint not in ("subject", "fact"):
        raise ConfigError(f"heldout_disjoint must be subject or fact, got {spec.disjoint!r}")
    rng = random.Random(spec.seed)
    known = [f for f in facts if f.category in spec.known_categories]
    unknown = [f for f in facts if f.category in spec.unknown_categories]
    rng.shuffle(known)
    rng.shuffle(unknown)
    n_held = spec.n_heldout + spec.n_heldout_val
    if spec.disjoint == "subject":
        subjects: set[str] = set()
        test = _take_by_subject(known, spec.n_heldout, subjects)
        val = _take_by_subject(known, spec.n_heldout_val, subjects)
        def touches(f: Fact) -> bool:
            return f.subject in subjects
    else:
        test, val = known[:spec.n_heldout], known[spec.n_heldout:n_held]
        pairs = {(f.subject, f.relation) for f in test + val}
        subjects = {f.subject for f in test + val}
        def touches(f: Fact) -> bool:
            return (f.subject, f.relation) in pairs
    if len(test) < spec.n_heldout or len(val) < spec.n_heldout_val:
        raise ConfigError(
            f"infeasible split: n_heldout={spec.n_heldout} + n_heldout_val={spec.n_heldout_val} "
            f"held-out Known facts needed, the source has {len(known)} (categories "
            f"{list(spec.known_categories)}, {spec.disjoint}-disjoint)")
    held_ids = {f.id for f in test + val}
    known_rest = [f for f in known if f.id not in held_ids and not touches(f)]
    unknown = [f for f in unknown if not touches(f)]
    n_unknown = round(spec.unknown_fraction * spec.n_train)
    n_known = spec.n_train - n_unknown
    if n_known > len(known_rest):
        raise ConfigError(
            f"infeasible split: {n_known} Known training facts needed (n_train={spec.n_train}, "
            f"unknown_fraction={spec.unknown_fraction}) beside {n_held} held-out ones; "
            f"{len(known_rest)} Known facts are left outside the held-out "
            f"{'subjects' if spec.disjoint == 'subject' else 'facts'} (categories "
            f"{list(spec.known_categories)}); lower n_heldout, n_heldout_val or n_train")
    if n_unknown > len(unknown):
        raise ConfigError(
            f"infeasible unknown_fraction={spec.unknown_fraction}: {n_unknown} Unknown facts "
            f"needed (n_train={spec.n_train}), the source has {len(unknown)} outside the "
            f"held-out subjects (categories {list(spec.unknown_categories)})")
    known_train, unknown_train = known_rest[:n_known], unknown[:n_unknown]
    used = held_ids | {f.id for f in known_train + unknown_train}
    pool_cats = set(spec.pool_categories or spec.known_categories)
    pool = [f for f in facts if f.category in pool_cats and f.id not in used and not touches(f)]
    rng.shuffle(pool)
    return Splits(val, test, known_train, unknown_train, pool, len(subjects))


def shuffled_answers(facts: list[Fact], seed: int | str) -> list[Fact]:
    """``facts`` with their objects permuted within each relation (``data.answer_shuffle``:
    the behaviour-cloning study), the same for the same seed."""
    rng = random.Random(f"{seed}:answer-shuffle")
    out = list(facts)
    for relation in sorted({f.relation for f in facts}):
        idx = [i for i, f in enumerate(facts) if f.relation == relation]
        objects = [facts[i].object for i in idx]
        rng.shuffle(objects)
        for i, obj in zip(idx, objects):
            out[i] = dataclasses.replace(facts[i], object=obj, aliases=[obj])
    return out
