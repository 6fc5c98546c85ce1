"""Source spec dispatch, option errors, and the few-shot exemplar pool."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from halluc_cl.data.sources import exemplar_pool, load_source
from halluc_cl.errors import ConfigError, DataError
from halluc_cl.facts.schema import Fact, write_facts

FIXTURE = Path(__file__).parent / "fixtures" / "entity_questions"


def _facts(n_per_relation: dict[str, int]) -> list[Fact]:
    return [Fact(f"{r}-{i}", f"S{i}", r, f"O{i}", f"Q {r} S{i} ?")
            for r, n in n_per_relation.items() for i in range(n)]


def test_jsonl_file_and_folder(tmp_path):
    facts = _facts({"r": 3})
    write_facts(tmp_path / "facts.jsonl", facts)
    assert load_source(str(tmp_path / "facts.jsonl")) == facts
    assert load_source(str(tmp_path)) == facts
    with pytest.raises(DataError, match="fact file not found"):
        load_source(str(tmp_path / "missing.jsonl"))


def test_synthetic_dispatch(tmp_path, monkeypatch):
    # a stand-in for the base-model build, so the test builds no model
    from halluc_cl.synthetic import resolve

    monkeypatch.setattr(resolve, "build_base_model",
                        lambda world: tmp_path if world == "tiny" else None)
    write_facts(tmp_path / "facts.jsonl", _facts({"r": 2}))
    assert [f.id for f in load_source("synthetic://tiny")] == ["r-0", "r-1"]


def test_entity_questions_folder():
    facts = load_source(str(FIXTURE))
    assert len(facts) == 32
    assert Counter(f.id.split("-")[2] for f in facts) == {"train": 11, "dev": 9, "test": 12}


def test_entity_questions_scheme_with_options():
    facts = load_source(f"entity_questions://{FIXTURE}?relations=P26,P36&splits=test")
    assert [f.id for f in facts][:1] == ["eq-P26-test-0"]
    assert Counter(f.relation for f in facts) == {"P26": 3, "P36": 3}
    with pytest.raises(ConfigError, match="unknown option 'split'; valid options: relations, "
                                          "splits"):
        load_source(f"entity_questions://{FIXTURE}?split=test")
    with pytest.raises(ConfigError, match="no folder"):
        load_source("entity_questions://?relations=ood")


def test_geonames_scheme():
    facts = load_source("geonames://?relations=country_capital,city_country"
                        "&min_population=5000000&max_per_relation=10&seed=3")
    assert Counter(f.relation for f in facts) == {"country_capital": 10, "city_country": 10}
    assert len(load_source("geonames://?relations=country_currency")) > 200


@pytest.mark.parametrize(("spec", "message"), [
    ("geonames://?relation=city_country",
     ("unknown option 'relation'; valid options: relations, min_population, max_per_relation, "
      "seed")),
    ("geonames://?min_population=lots", "option 'min_population' must be an integer"),
    ("geonames://?seed=1&seed=2", "option 'seed' given twice"),
    ("geonames://?seed=", "option 'seed' has no value"),
    ("geonames://?seed", "malformed options"),
    ("geonames://cities", "write options after '\\?'"),
    ("geonames://?relations=country_flag", "unknown geonames relation"),
])
def test_geonames_option_errors(spec, message):
    with pytest.raises(ConfigError, match=message):
        load_source(spec)


def test_exemplar_pool_entity_questions_uses_dev():
    facts = load_source(str(FIXTURE))
    probe, exemplars = exemplar_pool(facts)
    dev_ids = {f.id for f in facts if "-dev-" in f.id}
    # P36 has no dev facts: it holds out part of its own (at most n - 1 = 2 of 3)
    assert {f.id for f in exemplars if f.relation != "P36"} == dev_ids
    assert Counter(f.relation for f in exemplars)["P36"] == 2
    assert not {f.id for f in probe} & {f.id for f in exemplars}
    assert {f.relation for f in probe} <= {f.relation for f in exemplars}
    assert len(probe) + len(exemplars) == len(facts)


def test_exemplar_pool_share_seeded_and_disjoint():
    facts = _facts({"a": 100, "b": 30, "c": 5})
    probe, exemplars = exemplar_pool(facts, share=0.1, min_per_relation=4, seed=0)
    assert Counter(f.relation for f in exemplars) == {"a": 10, "b": 4, "c": 4}
    assert not {f.id for f in probe} & {f.id for f in exemplars}
    assert len(probe) + len(exemplars) == len(facts)
    assert [f.id for f in probe] == [f.id for f in facts if f not in exemplars]  # input order
    assert exemplar_pool(facts, seed=0) == (probe, exemplars)
    assert exemplar_pool(facts, seed=1)[1] != exemplars


def test_exemplar_pool_drops_probe_facts_shown_as_exemplars():
    facts = _facts({"a": 10})
    twin = Fact("twin", facts[0].subject, "a", "O0", "another wording ?")
    probe, exemplars = exemplar_pool(facts + [twin], min_per_relation=10)
    shown = {(f.subject, f.relation) for f in exemplars}
    assert all((f.subject, f.relation) not in shown for f in probe)


def test_exemplar_pool_errors():
    with pytest.raises(DataError, match="relation 'lonely' has 1 fact"):
        exemplar_pool(_facts({"a": 5, "lonely": 1}))
    with pytest.raises(ConfigError, match="0 <= share < 1"):
        exemplar_pool(_facts({"a": 5}), share=1.0)
