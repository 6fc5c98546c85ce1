"""Fact JSONL reading/writing and its line-numbered validation."""

from __future__ import annotations

import json
import re

import pytest

from halluc_cl.errors import DataError
from halluc_cl.facts.schema import Fact, read_facts, write_facts


def _record(i: int, **extra) -> dict:
    rec = {"id": f"f{i}", "subject": f"S{i}", "relation": "birth_city", "object": f"O{i}",
           "question": f"Where was S{i} born ?"}
    rec.update(extra)
    return rec


def _esc(path) -> str:
    return re.escape(str(path))


def _write_lines(path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def test_round_trip(tmp_path):
    facts = [
        Fact("a", "Alice Smith", "birth_city", "Paris", "Where was Alice Smith born ?",
             aliases=["Paris", "Paris France"], category="HighlyKnown", p_correct=0.75),
        Fact("b", "Bob", "employer", "Acme", "Who employs Bob ?"),
        Fact("c", "Ünïcode", "field", "Café", "What field does Ünïcode work in ?",
             category="Unknown"),
    ]
    path = tmp_path / "sub" / "facts.jsonl"
    write_facts(path, facts)
    assert read_facts(path) == facts
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3
    # None fields are left out of the file, set ones are kept
    assert "p_correct" not in json.loads(lines[1])
    assert "category" not in json.loads(lines[1])
    assert json.loads(lines[0])["p_correct"] == 0.75
    assert json.loads(lines[1])["aliases"] == ["Acme"]


def test_blank_lines_skipped_and_unknown_keys_ignored(tmp_path):
    path = tmp_path / "facts.jsonl"
    _write_lines(path, ["", json.dumps(_record(1, extra_key=5)), "   ", json.dumps(_record(2))])
    facts = read_facts(path)
    assert [f.id for f in facts] == ["f1", "f2"]
    assert not hasattr(facts[0], "extra_key")


def test_aliases_default_to_object(tmp_path):
    assert Fact("x", "S", "r", "Obj", "Q ?").aliases == ["Obj"]
    assert Fact("x", "S", "r", "Obj", "Q ?", aliases=["A", "B"]).aliases == ["A", "B"]
    path = tmp_path / "facts.jsonl"
    _write_lines(path, [json.dumps(_record(1)), json.dumps(_record(2, aliases=[]))])
    assert [f.aliases for f in read_facts(path)] == [["O1"], ["O2"]]


def test_malformed_json_names_file_and_line(tmp_path):
    path = tmp_path / "facts.jsonl"
    _write_lines(path, [json.dumps(_record(1)), "", '{"id": "f3", broken'])
    with pytest.raises(DataError, match=rf"{_esc(path)}:3: malformed JSON"):
        read_facts(path)


def test_non_object_record(tmp_path):
    path = tmp_path / "facts.jsonl"
    _write_lines(path, ["[1, 2]"])
    with pytest.raises(DataError, match=rf"{_esc(path)}:1: expected a JSON object, got list"):
        read_facts(path)


@pytest.mark.parametrize("field", ["id", "subject", "relation", "object", "question"])
def test_missing_required_field(tmp_path, field):
    rec = _record(2)
    del rec[field]
    path = tmp_path / "facts.jsonl"
    _write_lines(path, [json.dumps(_record(1)), json.dumps(rec)])
    msg = rf"{_esc(path)}:2: missing or empty required field\(s\): {field}$"
    with pytest.raises(DataError, match=msg):
        read_facts(path)


def test_empty_and_non_string_required_fields(tmp_path):
    path = tmp_path / "facts.jsonl"
    _write_lines(path, [json.dumps(_record(1, object="", subject=3))])
    msg = r":1: missing or empty required field\(s\): subject, object"
    with pytest.raises(DataError, match=msg):
        read_facts(path)


def test_byte_order_mark_is_accepted(tmp_path):
    """A UTF-8 file as Windows editors save it: a byte-order mark before the first record."""
    path = tmp_path / "facts.jsonl"
    lines = [json.dumps(_record(1, subject="Ünïcode")), json.dumps(_record(2))]
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode("utf-8") + b"\r\n")
    assert [(f.id, f.subject) for f in read_facts(path)] == [("f1", "Ünïcode"), ("f2", "S2")]


def test_bytes_that_are_not_utf8_name_the_line(tmp_path):
    path = tmp_path / "facts.jsonl"
    latin1 = json.dumps(_record(2, object="Café"), ensure_ascii=False).encode("latin-1")
    path.write_bytes(json.dumps(_record(1)).encode() + b"\n" + latin1 + b"\n")
    column = latin1.index(b"\xe9") + 1
    msg = rf"{_esc(path)}:2: not UTF-8 text \(byte 0xe9 at column {column}\); save the file as UTF-8"
    with pytest.raises(DataError, match=msg):
        read_facts(path)


@pytest.mark.parametrize("field", ["id", "subject", "relation", "object", "question"])
def test_whitespace_only_required_field(tmp_path, field):
    path = tmp_path / "facts.jsonl"
    _write_lines(path, [json.dumps(_record(1)), json.dumps(_record(2, **{field: " \t "}))])
    msg = rf"{_esc(path)}:2: missing or empty required field\(s\): {field}$"
    with pytest.raises(DataError, match=msg):
        read_facts(path)


@pytest.mark.parametrize(("extra", "field"), [
    ({"aliases": ["O1", " "]}, r"aliases\[1\]"),
    ({"category": ""}, "category"),
])
def test_blank_alias_or_category(tmp_path, extra, field):
    path = tmp_path / "facts.jsonl"
    _write_lines(path, [json.dumps(_record(1, **extra))])
    with pytest.raises(DataError, match=rf":1: missing or empty required field\(s\): {field}$"):
        read_facts(path)


def test_fact_refuses_blank_fields():
    with pytest.raises(DataError, match=r"fact 'x': missing or empty required field\(s\): "
                                        r"subject, aliases\[0\]"):
        Fact("x", "  ", "r", "Obj", "Q ?", aliases=[""])


def test_contradicting_facts_name_both_lines(tmp_path):
    """A merged file that gives one (subject, relation) two answers: which is true?"""
    path = tmp_path / "facts.jsonl"
    clash = _record(7, id="other-f1", subject=" s1 ", object="Elsewhere")  # case and spaces
    _write_lines(path, [json.dumps(_record(1)), json.dumps(_record(2)), json.dumps(clash)])
    msg = (rf"{_esc(path)}:3: fact 'other-f1' contradicts fact 'f1' \(line 1\): \(' s1 ', "
           r"'birth_city'\) is 'Elsewhere' here and 'O1' there; keep the right one")
    with pytest.raises(DataError, match=msg):
        read_facts(path)


@pytest.mark.parametrize("second", [
    _record(1, id="again"),  # the same fact under another id
    _record(1, id="again", object="The O1!"),  # the same answer, spelled otherwise
    _record(1, id="again", object="Olympus", aliases=["Olympus", "O1"]),  # an alias of it
])
def test_repeated_fact_is_refused(tmp_path, second):
    """The same question with a compatible answer would be trained on and scored twice."""
    path = tmp_path / "facts.jsonl"
    _write_lines(path, [json.dumps(_record(1)), json.dumps(second)])
    msg = (rf"{_esc(path)}:2: fact 'again' repeats fact 'f1' \(line 1\): both ask \('S1', "
           r"'birth_city'\); keep one record and list every accepted answer in its aliases")
    with pytest.raises(DataError, match=msg):
        read_facts(path)


def test_other_relation_of_one_subject_is_no_repeat(tmp_path):
    path = tmp_path / "facts.jsonl"
    _write_lines(path, [json.dumps(_record(1)), json.dumps(_record(1, id="f1e",
                                                                    relation="employer"))])
    assert [f.id for f in read_facts(path)] == ["f1", "f1e"]


def test_entity_questions_records_may_share_a_question(tmp_path):
    """EntityQuestions asks an ambiguous name's question once per entity, in one split or
    several: its records (``eq-`` ids, e.g. a probe's output) are not checked."""
    path = tmp_path / "facts.jsonl"
    ask = {"subject": "John Smith", "relation": "P19", "question": "Where was John Smith born?"}
    records = [{"id": "eq-P19-train-0", "object": "Leeds", **ask},
               {"id": "eq-P19-train-1", "object": "Ohio", **ask},
               {"id": "eq-P19-test-0", "object": "Perth", **ask}]
    _write_lines(path, [json.dumps(r) for r in records])
    assert [f.object for f in read_facts(path)] == ["Leeds", "Ohio", "Perth"]


def test_bad_aliases(tmp_path):
    path = tmp_path / "facts.jsonl"
    _write_lines(path, [json.dumps(_record(1, aliases=["ok", 3]))])
    with pytest.raises(DataError, match=rf"{_esc(path)}:1: 'aliases' must be a list of strings"):
        read_facts(path)
    _write_lines(path, [json.dumps(_record(1, aliases="Paris"))])
    with pytest.raises(DataError, match="'aliases' must be a list of strings"):
        read_facts(path)


def test_duplicate_id_names_both_lines(tmp_path):
    path = tmp_path / "facts.jsonl"
    dup = _record(9, id="f1")
    _write_lines(path, [json.dumps(_record(1)), json.dumps(_record(2)), "", json.dumps(dup)])
    msg = rf"{_esc(path)}:4: duplicate id 'f1' \(first on line 1\)"
    with pytest.raises(DataError, match=msg):
        read_facts(path)


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_file(tmp_path, content):
    path = tmp_path / "facts.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match="no facts"):
        read_facts(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="fact file not found"):
        read_facts(tmp_path / "nope.jsonl")


