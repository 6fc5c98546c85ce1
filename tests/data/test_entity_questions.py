"""EntityQuestions folder reader: subjects from templates, ids, splits, and clear errors."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from halluc_cl.data.entity_questions import (
    IN_DISTRIBUTION_RELATIONS,
    OOD_RELATIONS,
    TEMPLATES,
    dataset_root,
    read_entity_questions,
    split_of,
)
from halluc_cl.errors import ConfigError, DataError

FIXTURE = Path(__file__).parent / "fixtures" / "entity_questions"


def _write(path: Path, records) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def test_fixture_splits_ids_subjects_aliases():
    splits = read_entity_questions(FIXTURE)
    assert {s: len(f) for s, f in splits.items()} == {"train": 11, "dev": 9, "test": 12}
    train = splits["train"]
    # relations in numeric order, records in file order
    assert [f.relation for f in train] == ["P17"] * 4 + ["P26"] * 3 + ["P40"] * 4
    first = train[0]
    assert (first.id, first.subject, first.object, first.aliases) == (
        "eq-P17-train-0", "Malitel", "Mali", ["Mali"])
    assert first.question == "Which country is Malitel located in?"
    assert first.category is None and first.p_correct is None
    minos = next(f for f in train if f.subject == "Minos")
    assert minos.id == "eq-P40-train-1"
    assert minos.object == "Phaedra"
    assert minos.aliases == ["Phaedra", "Androgeus", "Catreus", "Ariadne"]
    duke = train[-1]
    assert duke.subject == "John de Mowbray, 4th Duke of Norfolk"  # commas and "'s" kept apart
    dev = {f.subject: f for f in splits["dev"]}
    assert dev["Odalätsi"].object == "Estonia"  # \u escapes decoded
    assert dev["Jay-Z"].object == "Beyoncé"
    assert [split_of(f) for f in splits["test"]] == ["test"] * 12
    assert len({f.id for s in splits.values() for f in s}) == 32


def test_relation_and_split_selection():
    splits = read_entity_questions(FIXTURE, "P40,P17", splits=("dev",))
    assert list(splits) == ["dev"]
    assert [f.relation for f in splits["dev"]] == ["P40"] * 3 + ["P17"] * 3
    only_test = read_entity_questions(FIXTURE, ["P36"])
    assert [len(only_test[s]) for s in ("train", "dev", "test")] == [0, 0, 3]
    with pytest.raises(DataError, match=r"no files for relation\(s\) \['P19'\]"):
        read_entity_questions(FIXTURE, "P19")
    with pytest.raises(ConfigError, match="unknown EntityQuestions relation"):
        read_entity_questions(FIXTURE, "P99999")
    with pytest.raises(ConfigError, match="unknown EntityQuestions split"):
        read_entity_questions(FIXTURE, splits=("validation",))


def test_presets():
    assert len(IN_DISTRIBUTION_RELATIONS) == 12 and len(OOD_RELATIONS) == 7
    assert not set(IN_DISTRIBUTION_RELATIONS) & set(OOD_RELATIONS)
    assert set(IN_DISTRIBUTION_RELATIONS) | set(OOD_RELATIONS) <= set(TEMPLATES)
    with pytest.raises(DataError, match="no files for relation"):
        read_entity_questions(FIXTURE, "in_distribution")  # the fixture has only 4 of them


def test_lenient_names_jsonl_and_dataset_subfolder(tmp_path):
    root = tmp_path / "EntityQuestions" / "dataset"
    _write(root / "train" / "P19.json", [{"question": "Where was Ada Lovelace born?",
                                          "answers": ["London"]}])
    jsonl = root / "dev" / "P19.dev.jsonl"
    jsonl.parent.mkdir(parents=True)
    jsonl.write_text('{"question": "Where was Alan Turing born?", "answers": ["Maida Vale"]}\n'
                     "\n", encoding="utf-8")
    # a .json file wins over a .jsonl one of the same relation and split (as in the git repo)
    _write(root / "test" / "P19.test.json", [{"question": "Where was Kurt Gödel born?",
                                              "answers": ["Brno"]}])
    (root / "test" / "P19.test.jsonl").write_text("not read", encoding="utf-8")
    (root / "test" / "README.md").write_text("ignored", encoding="utf-8")
    assert dataset_root(tmp_path / "EntityQuestions") == root
    splits = read_entity_questions(tmp_path / "EntityQuestions")
    assert [(f.id, f.subject) for s in splits.values() for f in s] == [
        ("eq-P19-train-0", "Ada Lovelace"), ("eq-P19-dev-0", "Alan Turing"),
        ("eq-P19-test-0", "Kurt Gödel")]


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="EntityQuestions folder not found"):
        read_entity_questions(tmp_path / "nope")


def test_no_relation_files(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "notes.json").write_text("[]", encoding="utf-8")
    with pytest.raises(DataError, match=r"no P\*\.json files in train/, dev/ or test/"):
        read_entity_questions(tmp_path)


def test_two_files_for_one_relation(tmp_path):
    _write(tmp_path / "train" / "P17.json", [])
    _write(tmp_path / "train" / "P17.train.json", [])
    with pytest.raises(DataError, match="two files for P17: P17.json and P17.train.json"):
        read_entity_questions(tmp_path)


def test_malformed_json_names_file(tmp_path):
    path = tmp_path / "dev" / "P17.dev.json"
    path.parent.mkdir()
    path.write_text('[{"question": "Which country is X located in?", ', encoding="utf-8")
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}: malformed JSON"):
        read_entity_questions(tmp_path)
    _write(path, {"question": "Which country is X located in?", "answers": ["Y"]})
    with pytest.raises(DataError, match="expected a JSON list of records, got dict"):
        read_entity_questions(tmp_path)


def test_malformed_jsonl_names_line(tmp_path):
    path = tmp_path / "dev" / "P17.dev.jsonl"
    path.parent.mkdir()
    path.write_text('{"question": "Which country is X located in?", "answers": ["Y"]}\n{oops\n',
                    encoding="utf-8")
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}:2: malformed JSON"):
        read_entity_questions(tmp_path)


@pytest.mark.parametrize(("record", "message"), [
    ({"answers": ["Y"]}, "missing or empty 'question'"),
    ({"question": "Which country is X located in?"}, "'answers' must be a non-empty list"),
    ({"question": "Which country is X located in?", "answers": []}, "'answers' must be"),
    ({"question": "Which country is X located in?", "answers": "Y"}, "'answers' must be"),
    (["Which country is X located in?"], "expected a JSON object, got list"),
    ({"question": "Where is X?", "answers": ["Y"]},
     "question 'Where is X\\?' does not match the P17 template"),
])
def test_bad_record_names_file_and_index(tmp_path, record, message):
    good = {"question": "Which country is Malitel located in?", "answers": ["Mali"]}
    path = _write(tmp_path / "train" / "P17.train.json", [good, record])
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}: record 1: {message}"):
        read_entity_questions(tmp_path)


def test_relation_without_template(tmp_path):
    _write(tmp_path / "test" / "P9999.test.json", [])
    with pytest.raises(DataError, match="no question template for relation P9999"):
        read_entity_questions(tmp_path)


def test_copy_of_fixture_reads_the_same(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "dataset")
    assert read_entity_questions(tmp_path) == read_entity_questions(FIXTURE)


def test_byte_order_mark_is_accepted(tmp_path):
    """Files saved by Windows editors start with a UTF-8 byte-order mark."""
    record = {"question": "Which country is Odalätsi located in?", "answers": ["Estonia"]}
    bom = b"\xef\xbb\xbf"
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "P17.dev.json").write_bytes(bom + json.dumps([record]).encode())
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "P17.test.jsonl").write_bytes(bom + json.dumps(record).encode() + b"\n")
    splits = read_entity_questions(tmp_path, splits=("dev", "test"))
    assert [f.subject for s in ("dev", "test") for f in splits[s]] == ["Odalätsi"] * 2


@pytest.mark.parametrize("name", ["P17.dev.json", "P17.dev.jsonl"])
def test_bytes_that_are_not_utf8_name_the_line(tmp_path, name):
    path = tmp_path / "dev" / name
    path.parent.mkdir()
    good = json.dumps({"question": "Which country is X located in?", "answers": ["Y"]})
    bad = '{"question": "Which country is Vouillé located in?", "answers": ["France"]}'
    text = f"[{good},\n{bad}]" if name.endswith(".json") else f"{good}\n{bad}\n"
    path.write_bytes(text.encode("latin-1"))
    column = bad.index("é") + 1
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}:2: not UTF-8 text \(byte 0xe9 "
                                        rf"at column {column}\)"):
        read_entity_questions(tmp_path)


def test_question_with_a_blank_subject(tmp_path):
    path = _write(tmp_path / "train" / "P17.train.json",
                  [{"question": "Which country is   located in?", "answers": ["Mali"]}])
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}: record 0: question "
                                        "'Which country is   located in\\?' has an empty subject"):
        read_entity_questions(tmp_path)


def test_question_in_two_splits_with_other_answers_is_kept(tmp_path):
    """The dataset may ask one subject's question again in another split with another answer
    (another entity of that name); such records are kept, also in a probe's output file."""
    from halluc_cl.facts.schema import read_facts, write_facts

    shutil.copytree(FIXTURE, tmp_path / "dataset")
    test_file = tmp_path / "dataset" / "test" / "P26.test.json"
    records = json.loads(test_file.read_text(encoding="utf-8"))
    _write(test_file, [*records, {"question": "Who is John Lennon married to?",
                                  "answers": ["Cynthia Lennon"]}])
    facts = [f for s in read_entity_questions(tmp_path).values() for f in s]
    lennon = [(f.id, f.object) for f in facts if f.subject == "John Lennon"]
    assert lennon == [("eq-P26-dev-0", "Yoko Ono"), ("eq-P26-test-3", "Cynthia Lennon")]
    write_facts(tmp_path / "probed.jsonl", facts)
    assert read_facts(tmp_path / "probed.jsonl") == facts
