"""``hf:`` fact sources: ``datasets`` tables the tests build and save themselves, read with a
column mapping onto the fact schema; bad rows are named."""

from __future__ import annotations

import json

import pytest
from datasets import Dataset, DatasetDict

from halluc_cl.data.sources import load_source
from halluc_cl.errors import ConfigError, DataError

POPQA = {  # PopQA's columns: possible_answers is a JSON string, ids are integers
    "id": [4222362, 3955910], "subj": ["George Rankin", "Sanhe"],
    "prop": ["occupation", "country"], "obj": ["politician", "People's Republic of China"],
    "question": ["What is George Rankin's occupation?", "In what country is Sanhe?"],
    "possible_answers": [json.dumps(["politician", "political leader"]),
                         json.dumps(["People's Republic of China", "China", "PRC"])],
    "s_pop": [142, 2286],
}


def test_a_saved_table_with_the_schemas_columns_reads_as_facts(tmp_path):
    rows = [{"id": "a", "subject": "France", "relation": "capital", "object": "Paris",
             "question": "What is the capital of France?", "aliases": ["Paris"],
             "category": "HighlyKnown"},
            {"id": "b", "subject": "Peru", "relation": "capital", "object": "Lima",
             "question": "What is the capital of Peru?", "aliases": [], "category": "Unknown"}]
    Dataset.from_list(rows).save_to_disk(tmp_path / "facts")
    facts = load_source(f"hf:{tmp_path / 'facts'}")
    assert [f.to_dict() for f in facts] == [
        rows[0], {**rows[1], "aliases": ["Lima"]}]  # an empty aliases list is [object]


def test_popqa_columns_and_a_split_of_a_dataset_dict(tmp_path):
    DatasetDict({"test": Dataset.from_dict(POPQA),
                 "train": Dataset.from_dict(POPQA).select([0])}).save_to_disk(tmp_path / "pq")
    facts = load_source(f"hf:{tmp_path / 'pq'}?split=test&columns=popqa")
    assert [(f.id, f.subject, f.relation, f.object) for f in facts] == [
        ("4222362", "George Rankin", "occupation", "politician"),
        ("3955910", "Sanhe", "country", "People's Republic of China")]
    assert facts[1].aliases == ["People's Republic of China", "China", "PRC"]
    assert len(load_source(f"hf:{tmp_path / 'pq'}?columns=popqa")) == 1  # train by default
    with pytest.raises(DataError, match="no split 'dev'; splits: test, train"):
        load_source(f"hf:{tmp_path / 'pq'}?split=dev&columns=popqa")


def test_entity_questions_columns_recover_subjects_and_ids(tmp_path):
    Dataset.from_dict({
        "question": ["What is the capital of Peru?", "Where was Ada Lovelace born?",
                     "What is the capital of Chile?"],
        "answers": [["Lima"], ["London", "City of London"], ["Santiago"]],
        "relation": ["P36", "P19", "P36"]}).save_to_disk(tmp_path / "eq")
    facts = load_source(f"hf:{tmp_path / 'eq'}?columns=entity_questions")
    assert [(f.id, f.subject, f.object) for f in facts] == [
        ("eq-P36-train-0", "Peru", "Lima"), ("eq-P19-train-0", "Ada Lovelace", "London"),
        ("eq-P36-train-1", "Chile", "Santiago")]
    Dataset.from_dict({"question": ["Who is Peru?"], "answers": [["x"]],
                       "relation": ["P36"]}).save_to_disk(tmp_path / "bad")
    with pytest.raises(DataError, match=r"row 0: question 'Who is Peru\?' does not match"):
        load_source(f"hf:{tmp_path / 'bad'}?columns=entity_questions")


def test_a_mapping_by_pairs_and_a_fixed_relation_from_a_jsonl_file(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [
        {"q": "Capital of Peru?", "who": "Peru", "a": "Lima"},
        {"q": "Capital of Chile?", "who": "Chile", "a": "Santiago"}]))
    facts = load_source(f"hf:{path}?columns=question:q,subject:who,object:a"
                        "&relation=capital")
    assert [(f.id, f.relation, f.aliases) for f in facts] == [
        ("hf-train-0", "capital", ["Lima"]), ("hf-train-1", "capital", ["Santiago"])]


@pytest.mark.parametrize("spec, error, message", [
    ("?columns=popqa", DataError, r"row 1: missing or empty required field\(s\): question"),
    ("?columns=nope", ConfigError, "unknown column mapping 'nope'"),
    ("?columns=question:q,subject", ConfigError, "'subject' is not field:column"),
    ("?columns=answer:obj", ConfigError, "unknown field 'answer'"),
    ("?columns=question:q", DataError, "no column.s. q; columns: id, subj"),
    ("?colums=popqa", ConfigError, "unknown option 'colums'"),
])
def test_bad_rows_and_mappings_are_named(tmp_path, spec, error, message):
    Dataset.from_dict({**POPQA, "question": [POPQA["question"][0], " "]}).save_to_disk(
        tmp_path / "pq")
    with pytest.raises(error, match=message):
        load_source(f"hf:{tmp_path / 'pq'}{spec}")


def test_repeated_ids_and_questions_are_refused(tmp_path):
    Dataset.from_dict({**POPQA, "id": [1, 1]}).save_to_disk(tmp_path / "ids")
    with pytest.raises(DataError, match="row 1: duplicate id '1' .first on row 0."):
        load_source(f"hf:{tmp_path / 'ids'}?columns=popqa")
    Dataset.from_dict({**POPQA, "subj": ["Sanhe", "Sanhe"], "prop": ["country"] * 2}
                      ).save_to_disk(tmp_path / "q")
    with pytest.raises(DataError, match="contradicts fact '4222362'"):
        load_source(f"hf:{tmp_path / 'q'}?columns=popqa")


def test_a_missing_local_dataset_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataError, match="no such local path"):
        load_source(f"hf:{tmp_path / 'absent'}")
    with pytest.raises(ConfigError, match="needs a dataset id or a local path"):
        load_source("hf:")


def test_a_fit_on_the_hf_copy_of_a_world_learns_what_the_world_gives(fit_tiny, tmp_path):
    """The tiny world's facts saved as a ``datasets`` table (categories included) give the
    fit on the world itself, evaluation for evaluation."""
    from halluc_cl.synthetic.resolve import world_facts

    Dataset.from_list([f.to_dict() for f in world_facts("synthetic://tiny")]).save_to_disk(
        tmp_path / "world")
    on_hf, _ = fit_tiny([], epochs=2, source=f"hf:{tmp_path / 'world'}")
    on_world, _ = fit_tiny([], epochs=2)
    assert on_hf.history == on_world.history and len(on_hf.history) == 2
