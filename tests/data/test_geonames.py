"""GeoNames facts: known values, no ambiguous subjects, deterministic seeded subsets."""

from __future__ import annotations

from collections import Counter

import pytest

from halluc_cl.data.geonames import RELATIONS, geonames_facts, in_sentence, language_names
from halluc_cl.errors import ConfigError


@pytest.fixture(scope="module")
def facts():
    return geonames_facts(min_population=500_000)


def _by_subject(facts, relation):
    return {f.subject: f for f in facts if f.relation == relation}


def test_known_values(facts):
    capital = _by_subject(facts, "country_capital")
    assert capital["France"].object == "Paris"
    assert capital["France"].question == "What is the capital of France?"
    assert capital["Japan"].object == "Tokyo"
    assert capital["United States"].question == "What is the capital of the United States?"
    continent = _by_subject(facts, "country_continent")
    assert continent["Brazil"].object == "South America"
    assert continent["Kenya"].object == "Africa"
    currency = _by_subject(facts, "country_currency")
    assert currency["Japan"].object == "Yen" and currency["Japan"].aliases == ["Yen", "JPY"]
    assert currency["Germany"].object == "Euro"
    language = _by_subject(facts, "country_language")
    assert language["France"].object == "French"
    assert language["Belgium"].aliases == ["Dutch", "French", "German"]
    assert language["Greece"].aliases[:2] == ["Modern Greek", "Greek"]
    assert language["Brazil"].question == "What language is spoken in Brazil?"
    city = _by_subject(facts, "city_country")
    assert city["Tokyo"].object == "Japan"
    assert city["Paris"].object == "France"  # Paris, Texas is far smaller
    assert city["Prague"].aliases == ["Czechia", "Czech Republic"]
    assert city["Nairobi"].question == "In which country is the city of Nairobi?"


@pytest.mark.parametrize("code, names", [
    ("fr-FR", ["French"]), ("el", ["Modern Greek", "Greek"]), ("cmn", ["Mandarin Chinese",
                                                                       "Chinese"]),
    ("nb", ["Norwegian Bokmål", "Norwegian"]), ("ms", ["Malay"]), ("zz", []),
])
def test_language_names(code, names):
    assert language_names(code) == names


def test_ambiguous_city_names_skipped(facts):
    city = _by_subject(facts, "city_country")
    assert "Birmingham" not in city  # Birmingham, Alabama has a fifth of Birmingham, UK
    assert "Hyderabad" not in city  # India and Pakistan
    assert "Singapore" not in city  # also a country's name
    names = Counter(f.subject.casefold() for f in facts if f.relation == "city_country")
    assert max(names.values()) == 1


def test_every_relation_sane(facts):
    counts = Counter(f.relation for f in facts)
    assert set(counts) == set(RELATIONS)
    assert counts["country_capital"] > 200 and counts["city_country"] > 1000
    assert len({f.id for f in facts}) == len(facts)
    for f in facts:
        assert f.subject and f.object and f.object in f.aliases
        assert f.category is None
    subjects = [(f.relation, f.subject) for f in facts]
    assert len(set(subjects)) == len(subjects)


def test_subsample_seeded_and_ordered():
    a = geonames_facts(["country_capital", "country_continent"], max_per_relation=20, seed=1)
    b = geonames_facts(["country_capital", "country_continent"], max_per_relation=20, seed=1)
    c = geonames_facts(["country_capital", "country_continent"], max_per_relation=20, seed=2)
    assert a == b and a != c
    assert [f.relation for f in a] == ["country_capital"] * 20 + ["country_continent"] * 20
    capitals = [f.subject.casefold() for f in a[:20]]
    assert capitals == sorted(capitals)
    everything = geonames_facts(["country_capital"])
    assert {f.id for f in a[:20]} <= {f.id for f in everything}


def test_min_population_filters_cities():
    big = geonames_facts(["city_country"], min_population=5_000_000)
    assert 20 < len(big) < 200
    assert {"Tokyo", "London"} <= {f.subject for f in big}


def test_in_sentence():
    assert in_sentence("France") == "France"
    assert in_sentence("Cayman Islands") == "the Cayman Islands"
    assert in_sentence("The Netherlands") == "the Netherlands"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"relations": ["country_flag"]}, "unknown geonames relation"),
    ({"relations": []}, "unknown geonames relation"),
    ({"relations": ["country_capital"] * 2}, "repeated geonames relation"),
    ({"min_population": 1000}, "min_population must be >= 15000"),
    ({"max_per_relation": 0}, "max_per_relation must be >= 1"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        geonames_facts(**kwargs)


def test_a_probe_output_of_all_geonames_facts_reads_back(tmp_path):
    """One record per question: the widest source passes ``read_facts``' checks."""
    from halluc_cl.facts.schema import read_facts, write_facts

    every = geonames_facts(min_population=15_000)
    write_facts(tmp_path / "geo.jsonl", every)
    assert read_facts(tmp_path / "geo.jsonl") == every
