"""Reader for the EntityQuestions dataset folder (Sciavolino et al., EMNLP 2021).

Usage::

    from halluc_cl.data.entity_questions import IN_DISTRIBUTION_RELATIONS, read_entity_questions
    splits = read_entity_questions("EntityQuestions/dataset", IN_DISTRIBUTION_RELATIONS)
    splits["train"][0].id          # "eq-P131-train-0"

The folder (``dataset/`` of github.com/princeton-nlp/EntityQuestions, or of its release zip)
holds ``{train,dev,test}/P<id>.<split>.json``, each a JSON list of ``{"question": ...,
"answers": [...]}``. Also accepted: ``P<id>.json`` names and ``.jsonl`` files (one record a
line); where a relation has both a ``.json`` and a ``.jsonl`` file in a split (as in the git
repository), the ``.json`` one is read. Every question is generated from one template per
relation, so the subject is recovered by matching that template. A question that does not
match is an error naming the file and record: it means a wrong file or a changed template,
and silently dropping facts would bias the relation mix.

Each record becomes a ``Fact`` with id ``eq-<P id>-<split>-<index>`` (index within its file),
relation = the P id, object = ``answers[0]`` and aliases = all answers (several answers are
several correct objects, e.g. children, not only spellings of one).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from halluc_cl.errors import ConfigError, DataError
from halluc_cl.facts.schema import ENTITY_QUESTIONS_ID, Fact
from halluc_cl.io import read_text, text_lines

SPLITS = ("train", "dev", "test")

# One question template per relation; "[X]" is the subject. Checked against the dataset files
# and the EntityQuestions paper (Table 1); P159 really reads "headquarter".
TEMPLATES: dict[str, str] = {
    "P17": "Which country is [X] located in?",
    "P19": "Where was [X] born?",
    "P20": "Where did [X] die?",
    "P26": "Who is [X] married to?",
    "P36": "What is the capital of [X]?",
    "P40": "Who is [X]'s child?",
    "P50": "Who is the author of [X]?",
    "P69": "Where was [X] educated?",
    "P106": "What kind of work does [X] do?",
    "P112": "Who founded [X]?",
    "P127": "Who owns [X]?",
    "P131": "Where is [X] located?",
    "P136": "What type of music does [X] play?",
    "P159": "Where is the headquarter of [X]?",
    "P170": "Who was [X] created by?",
    "P175": "Who performed [X]?",
    "P176": "Which company is [X] produced by?",
    "P264": "What music label is [X] represented by?",
    "P276": "Where is [X] located?",
    "P407": "Which language was [X] written in?",
    "P413": "What position does [X] play?",
    "P495": "Which country was [X] created in?",
    "P740": "Where was [X] founded?",
    "P800": "What is [X] famous for?",
}

# Gekhman et al. 2024 ("Does Fine-Tuning LLMs on New Knowledge Encourage Hallucinations?"),
# appendix A: 12 relations for train/dev/test (Tables 3-4) and 7 held out as an
# out-of-distribution test set (Table 5). P106, P413, P159 (overlap with P800/P36) and
# P20, P276 were left out by them.
IN_DISTRIBUTION_RELATIONS = ("P131", "P136", "P17", "P19", "P26", "P264", "P36", "P40",
                             "P495", "P69", "P740", "P800")
OOD_RELATIONS = ("P127", "P50", "P407", "P176", "P170", "P175", "P112")
RELATION_PRESETS: dict[str, tuple[str, ...]] = {
    "in_distribution": IN_DISTRIBUTION_RELATIONS,
    "ood": OOD_RELATIONS,
}

_FILE_RE = re.compile(r"^(P\d+)(?:\.(train|dev|test))?\.(json|jsonl)$")


def _template_regex(template: str) -> re.Pattern:
    before, after = template.split("[X]")
    return re.compile(re.escape(before) + r"(?P<subject>.+)" + re.escape(after))


_TEMPLATE_RES = {rel: _template_regex(t) for rel, t in TEMPLATES.items()}


def split_of(fact: Fact) -> str | None:
    """The EntityQuestions split recorded in a fact's id, or None for other facts."""
    m = ENTITY_QUESTIONS_ID.match(fact.id)
    return m.group(2) if m else None


def resolve_relations(spec: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...] | None:
    """Relations from a preset, a comma-separated list or a sequence; None or ``all``: all found.

    Raises:
        ConfigError: for a relation without a known template.
    """
    if spec is None or spec == "all":
        return None
    if isinstance(spec, str):
        if spec in RELATION_PRESETS:
            return RELATION_PRESETS[spec]
        spec = [r.strip() for r in spec.split(",") if r.strip()]
    unknown = [r for r in spec if r not in TEMPLATES]
    if unknown:
        raise ConfigError(f"unknown EntityQuestions relation(s) {unknown}; presets "
                        f"{sorted(RELATION_PRESETS)} or P ids from {sorted(TEMPLATES)}")
    return tuple(spec)


def dataset_root(path: str | Path) -> Path | None:
    """``path`` (or its ``dataset/`` subfolder) if it looks like an EntityQuestions folder."""
    path = Path(path).expanduser()
    for root in (path, path / "dataset"):
        if any(_relation_files(root, split) for split in SPLITS):
            return root
    return None


def _relation_files(root: Path, split: str) -> dict[str, Path]:
    """P id -> file of one split (``.json`` preferred over ``.jsonl``)."""
    folder = root / split
    if not folder.is_dir():
        return {}
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        m = _FILE_RE.match(path.name)
        if not m or not path.is_file() or m.group(2) not in (None, split):
            continue
        rel = m.group(1)
        if rel in found and found[rel].suffix == ".json" and path.suffix == ".jsonl":
            continue
        if rel in found and found[rel].suffix == path.suffix:
            raise DataError(f"{folder}: two files for {rel}: {found[rel].name} and {path.name}")
        found[rel] = path
    return found


def _load_records(path: Path) -> list[tuple[str, object]]:
    """(where, record) pairs of a ``.json`` list or a ``.jsonl`` file (UTF-8, with or without
    a byte-order mark)."""
    if path.suffix == ".jsonl":
        out = []
        for lineno, line in text_lines(path):
            if line.strip():
                try:
                    out.append((f"{path}:{lineno}", json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{lineno}: malformed JSON ({exc.msg})") from None
        return out
    try:
        data = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: malformed JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    return [(f"{path}: record {i}", rec) for i, rec in enumerate(data)]


def subject_of(question: str, relation: str, where: str) -> str:
    """The subject of an EntityQuestions question, matched against its relation's template.

    Raises:
        DataError: no template for the relation, a question that does not match it, or an
            empty subject; ``where`` names the record.
    """
    if relation not in _TEMPLATE_RES:
        raise DataError(f"{where}: no question template for relation {relation!r}; "
                        f"known: {sorted(TEMPLATES)}")
    m = _TEMPLATE_RES[relation].fullmatch(question.strip())
    if m is None:
        raise DataError(f"{where}: question {question!r} does not match the {relation} "
                        f"template {TEMPLATES[relation]!r}")
    if not m.group("subject").strip():
        raise DataError(f"{where}: question {question!r} has an empty subject")
    return m.group("subject").strip()


def read_relation_file(path: str | Path, relation: str, split: str) -> list[Fact]:
    """Facts of one ``P<id>.<split>.json`` file; errors name the file and record.

    Raises:
        DataError: malformed JSON, a record without ``question``/``answers``, or a question
            that does not match the relation's template.
    """
    path = Path(path)
    if relation not in _TEMPLATE_RES:
        raise DataError(f"{path}: no question template for relation {relation}; "
                        f"known: {sorted(TEMPLATES)}")
    facts = []
    for index, (where, rec) in enumerate(_load_records(path)):
        if not isinstance(rec, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}")
        question, answers = rec.get("question"), rec.get("answers")
        if not isinstance(question, str) or not question.strip():
            raise DataError(f"{where}: missing or empty 'question'")
        if (not isinstance(answers, list) or not answers
                or not all(isinstance(a, str) and a.strip() for a in answers)):
            raise DataError(f"{where}: 'answers' must be a non-empty list of strings")
        facts.append(Fact(
            id=f"eq-{relation}-{split}-{index}", subject=subject_of(question, relation, where),
            relation=relation, object=answers[0], question=question.strip(),
            aliases=list(dict.fromkeys(answers)),
        ))
    return facts


def read_entity_questions(
    path: str | Path,
    relations: str | list[str] | tuple[str, ...] | None = None,
    splits: tuple[str, ...] | list[str] = SPLITS,
) -> dict[str, list[Fact]]:
    """Facts per split of an EntityQuestions folder.

    Args:
        path: The ``dataset`` folder (or the folder above it).
        relations: A preset (``in_distribution``, ``ood``, ``all``), P ids (a list or a
            comma-separated string), or None for every relation found.
        splits: Splits to read.

    Returns:
        ``{split: facts}`` for every requested split, relations in the requested (or sorted)
        order, records in file order.

    Raises:
        ConfigError: an unknown relation or split.
        DataError: a missing folder, no ``P*.json`` files, a requested relation found in no
            split, or a malformed file.
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        raise DataError(f"EntityQuestions folder not found: {path}")
    bad = [s for s in splits if s not in SPLITS]
    if bad:
        raise ConfigError(f"unknown EntityQuestions split(s) {bad}; choose from {list(SPLITS)}")
    root = dataset_root(path)
    if root is None:
        raise DataError(f"{path}: no P*.json files in train/, dev/ or test/ "
                        "(expected an EntityQuestions dataset folder)")
    wanted = resolve_relations(relations)
    files = {s: _relation_files(root, s) for s in splits}
    found = {rel for per_split in files.values() for rel in per_split}
    missing = [r for r in wanted or () if r not in found]
    if missing:
        raise DataError(f"{root}: no files for relation(s) {missing} in splits {list(splits)}")
    order = wanted if wanted is not None else sorted(found, key=lambda r: int(r[1:]))
    return {s: [f for rel in order if rel in files[s]
                for f in read_relation_file(files[s][rel], rel, s)] for s in splits}
