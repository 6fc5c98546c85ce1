"""Fact records and their JSONL files (docs/data.md), with line-numbered validation, and the
atomic writes of result files."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from halluc_cl.errors import DataError
from halluc_cl.facts.matching import exact_match
from halluc_cl.io import atomic_write_text, text_lines, writing

REQUIRED_FIELDS = ("id", "subject", "relation", "object", "question")
# ids of EntityQuestions records (data/entity_questions.py): eq-<P id>-<split>-<index>
ENTITY_QUESTIONS_ID = re.compile(r"^eq-(P\d+)-(train|dev|test)-\d+$")

# the SliCK knowledge categories (Gekhman et al. 2024), from most to least known
CATEGORIES = ("HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown")


@dataclass
class Fact:
    """One (subject, relation, object) fact with the question that asks for it.

    Attributes:
        id: Unique identifier.
        subject: The entity the question is about.
        relation: Relation name, e.g. ``birth_city``.
        object: The gold answer.
        question: Natural-language question whose answer is ``object``.
        aliases: Accepted answers; defaults to ``[object]``.
        category: Knowledge category (SliCK name or ground truth of a synthetic world).
        p_correct: Estimated probability that the base model answers correctly.
    """

    id: str
    subject: str
    relation: str
    object: str
    question: str
    aliases: list[str] = field(default_factory=list)
    category: str | None = None
    p_correct: float | None = None

    def __post_init__(self) -> None:
        blank = blank_fields(vars(self))
        if blank:
            raise DataError(f"fact {self.id!r}: missing or empty required field(s): "
                            f"{', '.join(blank)}")
        if not self.aliases:
            self.aliases = [self.object]

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def blank_fields(record: dict) -> list[str]:
    """Required fields of ``record`` that are missing, not strings, or only whitespace; then
    ``aliases[i]`` for a blank alias and ``category`` for a blank category."""
    blank = [k for k in REQUIRED_FIELDS
             if not isinstance(record.get(k), str) or not record[k].strip()]
    aliases = record.get("aliases") or []
    if isinstance(aliases, list):
        blank += [f"aliases[{i}]" for i, a in enumerate(aliases)
                  if isinstance(a, str) and not a.strip()]
    category = record.get("category")
    if isinstance(category, str) and not category.strip():
        blank.append("category")
    return blank


def fact_from_dict(record: object, where: str) -> Fact:
    """Validate one decoded JSON record; ``where`` names it in errors (``file:line``)."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    aliases = record.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise DataError(f"{where}: 'aliases' must be a list of strings")
    if record.get("category") is not None and not isinstance(record["category"], str):
        raise DataError(f"{where}: 'category' must be a string")
    blank = blank_fields(record)
    if blank:
        raise DataError(f"{where}: missing or empty required field(s): {', '.join(blank)}")
    p = record.get("p_correct")
    if p is not None and (isinstance(p, bool) or not isinstance(p, (int, float))):
        raise DataError(f"{where}: 'p_correct' must be a number")
    known = set(Fact.__dataclass_fields__)
    return Fact(**{k: v for k, v in record.items() if k in known})


def read_facts(path: str | os.PathLike) -> list[Fact]:
    """Read and validate a fact JSONL file; errors name the file and line number.

    The file is UTF-8, with or without a byte-order mark. Ids must be unique, and no two
    facts may ask the same question (``check_one_record_per_question``).

    Raises:
        DataError: a missing file, a line that is not UTF-8 or not a valid record, a repeated
            id or question, or no facts at all.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"fact file not found: {path}")
    facts, lines, seen = [], [], {}
    for lineno, line in text_lines(path):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: malformed JSON ({exc.msg})") from None
        fact = fact_from_dict(record, where)
        if fact.id in seen:
            raise DataError(f"{where}: duplicate id {fact.id!r} (first on line {seen[fact.id]})")
        seen[fact.id] = lineno
        facts.append(fact)
        lines.append(lineno)
    if not facts:
        raise DataError(f"{path}: no facts")
    check_one_record_per_question(facts, lines, path)
    return facts


def question_key(fact: Fact) -> tuple[str, str]:
    """What a fact asks: its subject (case and spacing ignored) and relation."""
    return " ".join(fact.subject.split()).casefold(), fact.relation.strip()


def check_one_record_per_question(facts: list[Fact], lines: list[int],
                                  path: str | os.PathLike) -> None:
    """Refuse two facts with the same subject and relation (``question_key``).

    Two such facts either contradict each other (neither object is an accepted answer of the
    other: which one is true?) or repeat one fact (it would be trained on and scored twice).
    Either way the message names both records. Facts of EntityQuestions (``eq-`` ids) are
    not checked: the dataset asks an ambiguous subject's question once per entity of that
    name (two people called John Smith), in one split or in several.

    Args:
        facts: The facts of one file.
        lines: The line number of each fact.
        path: The file, named in the error.

    Raises:
        DataError: the first fact that asks an earlier fact's question.
    """
    first: dict[tuple[str, str], int] = {}
    for i, fact in enumerate(facts):
        if ENTITY_QUESTIONS_ID.match(fact.id):
            continue
        j = first.setdefault(question_key(fact), i)
        if j != i:
            raise DataError(f"{path}:{lines[i]}: {same_question(fact, facts[j], lines[j])}")


def same_question(fact: Fact, first: Fact, first_line: int) -> str:
    """Why ``fact`` may not ask what ``first`` (on ``first_line``) asked."""
    asked = f"({fact.subject!r}, {fact.relation!r})"
    if exact_match(fact.object, first.aliases) or exact_match(first.object, fact.aliases):
        return (f"fact {fact.id!r} repeats fact {first.id!r} (line {first_line}): both ask "
                f"{asked}; keep one record and list every accepted answer in its aliases")
    return (f"fact {fact.id!r} contradicts fact {first.id!r} (line {first_line}): {asked} is "
            f"{fact.object!r} here and {first.object!r} there; keep the right one (if both "
            "answers are correct, keep one record with both in its aliases)")


def write_facts(path: str | os.PathLike, facts: Iterable[Fact]) -> None:
    """Write facts as JSONL, atomically."""
    atomic_write_text(path, "".join(json.dumps(f.to_dict()) + "\n" for f in facts))


def append_facts(path: str | os.PathLike, facts: Iterable[Fact]) -> None:
    """Append facts to a JSONL file, one complete line each (the probe's partial file).

    Raises:
        WriteError: the write failed (a full disk, say); the lines written before are kept,
            and a torn last line is for the reader to drop.
    """
    path = Path(path)
    with writing(path), path.open("a", encoding="utf-8") as fh:
        fh.write("".join(json.dumps(f.to_dict()) + "\n" for f in facts))
