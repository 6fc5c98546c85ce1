"""Fact records and their JSONL files (DESIGN §2), with line-numbered validation."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from halluc_cl.errors import DataError

REQUIRED_FIELDS = ("id", "subject", "relation", "object", "question")


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
        if not self.aliases:
            self.aliases = [self.object]

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def fact_from_dict(record: object, where: str) -> Fact:
    """Validate one decoded JSON record; ``where`` names it in errors (``file:line``)."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    missing = [k for k in REQUIRED_FIELDS if not isinstance(record.get(k), str) or not record[k]]
    if missing:
        raise DataError(f"{where}: missing or empty required field(s): {', '.join(missing)}")
    aliases = record.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise DataError(f"{where}: 'aliases' must be a list of strings")
    if record.get("category") is not None and not isinstance(record["category"], str):
        raise DataError(f"{where}: 'category' must be a string")
    p = record.get("p_correct")
    if p is not None and (isinstance(p, bool) or not isinstance(p, (int, float))):
        raise DataError(f"{where}: 'p_correct' must be a number")
    known = set(Fact.__dataclass_fields__)
    return Fact(**{k: v for k, v in record.items() if k in known})


def read_facts(path: str | os.PathLike) -> list[Fact]:
    """Read and validate a fact JSONL file; errors name the file and line number."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"fact file not found: {path}")
    facts, seen = [], {}
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
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
    if not facts:
        raise DataError(f"{path}: no facts")
    return facts


def current_umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; follow the umask
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` atomically (see ``atomic_write_bytes``)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_facts(path: str | os.PathLike, facts: Iterable[Fact]) -> None:
    """Write facts as JSONL, atomically."""
    atomic_write_text(path, "".join(json.dumps(f.to_dict()) + "\n" for f in facts))
