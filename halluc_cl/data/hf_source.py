"""Fact sets in Hugging Face ``datasets`` form: ``hf:<dataset id or local path>?options``.

Usage::

    from halluc_cl.data.sources import load_source
    facts = load_source("hf:data/popqa?split=test&columns=popqa")
    facts = load_source("hf:my_facts_saved_with_save_to_disk")  # columns named as the schema

A local path is a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``
(read with ``datasets.load_from_disk``, offline), or a data file or folder of JSON, JSONL,
CSV or Parquet files (``datasets.load_dataset``); anything else is a hub id, read with
``datasets.load_dataset`` when the user is online (``HF_DATASETS_OFFLINE=1`` makes it an
error unless the hub's copy is cached).

Options:

- ``split``: the split to read (default: the only one, else ``train``).
- ``config``: the hub dataset's configuration name.
- ``columns``: a ready mapping (``popqa``, ``entity_questions``) or ``field:column`` pairs,
  comma-separated, onto the fact schema (docs/data.md): ``id``, ``subject``, ``relation``,
  ``object``, ``question``, ``aliases``, ``category``, ``p_correct``. Fields not mapped are
  read from the column of their own name where there is one.
- ``relation``: the relation of every row (a dataset of one relation without that column).

Derived fields: without an ``object`` column the object is the first alias; without an ``id``
column the id is ``hf-<split>-<row>``; an ``aliases`` cell may be a list of strings, a JSON
string holding one (PopQA's ``possible_answers``) or one string. The ``entity_questions``
mapping reads ``question``, ``answers`` and ``relation`` (a P id) columns, recovers the
subject from the relation's question template and gives ``eq-<P id>-<split>-<row of that
relation>`` ids, as the folder reader does (``data/entity_questions.py``). Every row passes
the JSONL schema's checks, and an error names the source and the row.
"""

from __future__ import annotations

import json
from pathlib import Path

from halluc_cl.data.entity_questions import SPLITS as EQ_SPLITS
from halluc_cl.data.entity_questions import subject_of
from halluc_cl.errors import ConfigError, DataError
from halluc_cl.facts.schema import Fact, check_one_record_per_question, fact_from_dict

HF = "hf:"
HF_OPTIONS = {"split": "str", "config": "str", "columns": "list", "relation": "str"}
FIELDS = ("id", "subject", "relation", "object", "question", "aliases", "category", "p_correct")
# field -> column of the datasets researchers bring
MAPPINGS: dict[str, dict[str, str]] = {
    # akariasai/PopQA: possible_answers is a JSON string of a list
    "popqa": {"id": "id", "subject": "subj", "relation": "prop", "object": "obj",
              "question": "question", "aliases": "possible_answers"},
    # EntityQuestions as one table: the subject comes from the question's template
    "entity_questions": {"question": "question", "aliases": "answers", "relation": "relation"},
}
FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


def column_mapping(columns: list[str] | None) -> dict[str, str]:
    """``field -> column`` from the ``columns`` option (a ready mapping's name or pairs).

    Raises:
        ConfigError: an unknown mapping name or field, or a pair without ``:``.
    """
    if not columns:
        return {}
    if len(columns) == 1 and ":" not in columns[0]:
        if columns[0] not in MAPPINGS:
            raise ConfigError(f"unknown column mapping {columns[0]!r}: {', '.join(MAPPINGS)}, "
                              "or field:column pairs")
        return dict(MAPPINGS[columns[0]])
    mapping = {}
    for pair in columns:
        field, sep, column = (x.strip() for x in pair.partition(":"))
        if not sep or not field or not column:
            raise ConfigError(f"columns: {pair!r} is not field:column")
        if field not in FIELDS:
            raise ConfigError(f"columns: unknown field {field!r}; fields: {', '.join(FIELDS)}")
        mapping[field] = column
    return mapping


def _read_table(where: str, config: str | None, split: str | None):
    """The ``datasets.Dataset`` of one split of a local dataset or a hub id."""
    import datasets

    path = Path(where).expanduser()
    try:
        if path.is_dir() and ((path / "dataset_dict.json").is_file()
                              or (path / "state.json").is_file()):
            table = datasets.load_from_disk(str(path))
        elif path.is_file() and path.suffix in FILE_BUILDERS:
            table = datasets.load_dataset(FILE_BUILDERS[path.suffix], data_files=str(path))
        elif path.exists():
            table = datasets.load_dataset(str(path))
        else:
            table = datasets.load_dataset(where, config)
    except (FileNotFoundError, ValueError, ConnectionError, OSError) as exc:
        hint = "" if path.exists() else " (no such local path; a hub id needs the network)"
        raise DataError(f"hf:{where}: cannot read it as a dataset{hint}: "
                        f"{str(exc).strip()[:300]}") from None
    if isinstance(table, datasets.DatasetDict):
        names = list(table)
        if split is None:
            split = names[0] if len(names) == 1 else "train" if "train" in names else None
        if split not in table:
            raise DataError(f"hf:{where}: choose a split with ?split=: {', '.join(names)}"
                            if split is None else
                            f"hf:{where}: no split {split!r}; splits: {', '.join(names)}")
        table = table[split]
    return table, split or "train"


def _aliases(value, where: str) -> list[str]:
    """An aliases cell as a list: a list, a JSON string of a list, or one string."""
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: 'aliases' is not valid JSON ({exc.msg})") from None
    if isinstance(value, str):
        value = [value]
    if value is None:
        return []
    if not isinstance(value, list):
        raise DataError(f"{where}: 'aliases' must be a list of strings, or a JSON string of one")
    return value


def _record(row: dict, mapping: dict[str, str], fixed_relation: str | None, where: str) -> dict:
    """One row as a fact record (before the schema's checks)."""
    record = {f: row[c] for f, c in mapping.items() if c in row}
    if fixed_relation is not None:
        record["relation"] = fixed_relation
    if "aliases" in record:
        record["aliases"] = _aliases(record["aliases"], where)
    if "object" not in record and record.get("aliases"):
        record["object"] = record["aliases"][0]
    if isinstance(record.get("id"), int):
        record["id"] = str(record["id"])
    return record


def hf_facts(source: str, split: str | None = None, config: str | None = None,
             columns: list[str] | None = None, relation: str | None = None) -> list[Fact]:
    """The facts of ``hf:<where>`` (module docstring); ``source`` is ``<where>``.

    Raises:
        ConfigError: a bad column mapping.
        DataError: an unreadable dataset, a missing split or column, or a row that fails the
            schema's checks (named by its index), a repeated id or question.
    """
    if not source:
        raise ConfigError("hf: needs a dataset id or a local path, e.g. hf:data/popqa?split=test")
    table, split = _read_table(source, config, split)
    mapping = column_mapping(columns)
    mapping.update({f: f for f in FIELDS if f not in mapping and f in table.column_names})
    missing = sorted({c for c in mapping.values() if c not in table.column_names})
    if missing:
        raise DataError(f"hf:{source} ({split}): no column(s) {', '.join(missing)}; columns: "
                        f"{', '.join(table.column_names)} (map them with ?columns=field:column)")
    entity_questions = columns == ["entity_questions"]
    facts, per_relation = [], {}
    for index, row in enumerate(table):
        where = f"hf:{source} ({split}) row {index}"
        record = _record(row, mapping, relation, where)
        if entity_questions and isinstance(record.get("relation"), str):
            rel = record["relation"]
            record["subject"] = subject_of(str(record.get("question", "")), rel, where)
            eq_split = "dev" if split == "validation" else split
            if eq_split not in EQ_SPLITS:
                raise DataError(f"hf:{source}: the entity_questions mapping reads the split "
                                f"train, dev (validation) or test, not {split!r}")
            record["id"] = f"eq-{rel}-{eq_split}-{per_relation.setdefault(rel, 0)}"
            per_relation[rel] += 1
        record.setdefault("id", f"hf-{split}-{index}")
        facts.append(fact_from_dict(record, where))
    if not facts:
        raise DataError(f"hf:{source} ({split}): no rows")
    seen: dict[str, int] = {}
    for index, fact in enumerate(facts):
        first = seen.setdefault(fact.id, index)
        if first != index:
            raise DataError(f"hf:{source} ({split}) row {index}: duplicate id {fact.id!r} "
                            f"(first on row {first})")
    check_one_record_per_question(facts, list(range(len(facts))), f"hf:{source} ({split}) row")
    return facts
