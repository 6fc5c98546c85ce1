"""The seeded synthetic world: determinism, key styles, templates and config validation."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace

import pytest

from halluc_cl.errors import ConfigError
from halluc_cl.synthetic.presets import world_config
from halluc_cl.synthetic.world import RELATIONS, SyntheticWorld, WorldConfig

TINY = world_config("tiny")


def _world(**changes) -> SyntheticWorld:
    return SyntheticWorld(replace(TINY, **changes))


def test_same_seed_gives_identical_world():
    a, b = SyntheticWorld(TINY), SyntheticWorld(TINY)
    assert a.facts() == b.facts()
    assert [e.key for e in a.entities] == [e.key for e in b.entities]
    assert a.vocabulary_text() == b.vocabulary_text()


def test_different_seed_gives_different_world():
    a, b = SyntheticWorld(TINY), _world(seed=TINY.seed + 1)
    assert [(f.subject, f.object) for f in a.facts()] != [(f.subject, f.object) for f in b.facts()]
    assert a.first_names != b.first_names


def test_fact_counts_ids_and_categories():
    world = _world(qa_fraction=0.5)
    facts = world.facts()
    n_entities = TINY.n_known + TINY.n_new
    assert len(facts) == n_entities * len(TINY.relations) == 96 * 4
    assert len({f.id for f in facts}) == len(facts)
    counts = Counter(f.category for f in facts)
    assert counts["Unknown"] == TINY.n_new * len(TINY.relations)
    assert counts["HighlyKnown"] + counts["MaybeKnown"] == TINY.n_known * len(TINY.relations)
    assert counts["HighlyKnown"] > 0 and counts["MaybeKnown"] > 0
    for fact in facts:
        entity = next(e for e in world.entities if e.key == fact.subject)
        assert fact.object == entity.attributes[fact.relation]
        assert fact.object in world.values[fact.relation]
        assert (fact.category != "Unknown") == entity.known
    # facts() hands out a copy
    facts.clear()
    assert len(world.facts()) == 384


@pytest.mark.parametrize("fraction, expected", [(1.0, "HighlyKnown"), (0.0, "MaybeKnown")])
def test_qa_fraction_extremes(fraction, expected):
    facts = _world(qa_fraction=fraction).facts()
    assert {f.category for f in facts if f.category != "Unknown"} == {expected}


def test_name_keys_come_from_shared_pools_and_share_tokens():
    world = _world(known_key_style="name", new_key_style="name")
    keys = [e.key for e in world.entities]
    assert len(set(keys)) == len(keys)
    first, last = set(world.first_names), set(world.last_names)
    assert len(first) == TINY.n_first_names and len(last) == TINY.n_last_names
    assert not first & last
    value_words = {v for vs in world.values.values() for v in vs}
    for key in keys:
        tokens = key.split(" ")
        assert len(tokens) == 2
        assert tokens[0] in first and tokens[1] in last
        assert not set(tokens) & value_words
    # 96 entities over 12 first names: name tokens are necessarily shared
    token_counts = Counter(t for k in keys for t in k.split(" "))
    assert max(token_counts.values()) > 1
    # a Known and a New entity share a name token
    known_tokens = {t for e in world.entities if e.known for t in e.key.split()}
    new_tokens = {t for e in world.entities if not e.known for t in e.key.split()}
    assert known_tokens & new_tokens


def test_uuid_keys_are_unique_and_share_no_tokens():
    world = _world(known_key_style="uuid", new_key_style="uuid")
    keys = [e.key for e in world.entities]
    assert all(re.fullmatch(r"u[0-9a-f]{10}", k) for k in keys)
    tokens = [t for k in keys for t in k.split()]
    assert len(tokens) == len(keys) == len(set(tokens))
    names = set(world.first_names) | set(world.last_names)
    assert not set(tokens) & names


def test_mixed_key_styles():
    world = _world(known_key_style="name", new_key_style="uuid")
    for e in world.entities:
        if e.known:
            assert len(e.key.split()) == 2
        else:
            assert re.fullmatch(r"u[0-9a-f]{10}", e.key)
    assert sum(e.known for e in world.entities) == TINY.n_known


def test_relation_templates():
    assert len(RELATIONS) >= 6
    for relation, (statements, questions) in RELATIONS.items():
        assert len(questions) >= 3, relation
        assert len(set(questions)) == len(questions), relation
        for q in questions:
            assert "{s}" in q and "{o}" not in q, (relation, q)
        for s in statements:
            assert "{s}" in s and "{o}" in s, (relation, s)


def test_each_question_contains_its_subject():
    world = _world(known_key_style="name", new_key_style="uuid")
    for fact in world.facts():
        assert fact.subject in fact.question
        assert fact.question in world.questions(fact)
        assert len(world.questions(fact)) == len(RELATIONS[fact.relation][1])
        assert all(fact.subject in q for q in world.questions(fact))


def test_statement_and_bio_state_the_facts():
    import random

    world = SyntheticWorld(TINY)
    entity = world.entities[0]
    facts = [f for f in world.facts() if f.subject == entity.key]
    assert len(facts) == len(TINY.relations)
    bio = world.bio(facts, random.Random(0))
    for f in facts:
        assert f.object in bio
    s = world.statement(facts[0], random.Random(1))
    assert facts[0].subject in s and facts[0].object in s


@pytest.mark.parametrize("fraction", [-0.1, 1.5])
def test_bad_qa_fraction(fraction):
    with pytest.raises(ConfigError, match="qa_fraction"):
        replace(TINY, qa_fraction=fraction)


def test_unknown_relation():
    with pytest.raises(ConfigError, match="unknown relation"):
        replace(TINY, relations=("birth_city", "favourite_colour"))


def test_too_few_names():
    # 4 x 4 = 16 name pairs for 10 + 7 = 17 entities
    with pytest.raises(ConfigError, match="more than 4x4 names"):
        WorldConfig(n_known=10, n_new=7, n_first_names=4, n_last_names=4)
    WorldConfig(n_known=10, n_new=6, n_first_names=4, n_last_names=4)  # exactly enough


def test_no_relations_or_known_entities():
    with pytest.raises(ConfigError):
        replace(TINY, relations=())
    with pytest.raises(ConfigError):
        replace(TINY, n_known=0)


def test_world_config_lookup():
    assert world_config("tiny") is TINY
    with pytest.raises(ConfigError, match="unknown synthetic world 'huge'"):
        world_config("huge")


def test_uuid_preset_keeps_known_entities_and_removes_name_overlap():
    from halluc_cl.analysis.overlap import name_tokens

    name_world = SyntheticWorld(world_config("default"))
    uuid_world = SyntheticWorld(world_config("default-uuid"))
    known = [(e.key, e.attributes) for e in name_world.entities if e.known]
    assert known == [(e.key, e.attributes) for e in uuid_world.entities if e.known]
    known_tokens = set().union(*(name_tokens(k) for k, _ in known))
    new_keys = [e.key for e in uuid_world.entities if not e.known]
    assert len(set(new_keys)) == len(new_keys) == 400
    assert not known_tokens & set().union(*(name_tokens(k) for k in new_keys))
    name_new = [e.key for e in name_world.entities if not e.known]
    assert sum(bool(name_tokens(k) & known_tokens) for k in name_new) > 390  # name keys overlap


@pytest.mark.parametrize("overlap, fresh", [(0.0, 400), (0.5, 200)])
def test_overlap_knob_renames_a_share_of_new_entities_with_disjoint_tokens(overlap, fresh):
    from halluc_cl.analysis.overlap import name_tokens

    base = SyntheticWorld(world_config("default"))
    world = SyntheticWorld(replace(world_config("default"), new_name_overlap=overlap))
    known_tokens = set().union(*(name_tokens(e.key) for e in base.entities if e.known))
    assert [(e.key, e.attributes) for e in world.entities if e.known] == \
        [(e.key, e.attributes) for e in base.entities if e.known]
    new = [e for e in world.entities if not e.known]
    disjoint = [e for e in new if not name_tokens(e.key) & known_tokens]
    assert len(disjoint) == fresh
    assert [e.attributes for e in new] == [e.attributes for e in base.entities if not e.known]
    assert len({e.key for e in world.entities}) == len(world.entities)


def test_overlap_knob_default_keeps_cache_keys_and_rejects_bad_values():
    assert "new_name_overlap" not in world_config("default").to_dict()
    assert world_config("default-overlap50").to_dict()["new_name_overlap"] == 0.5
    with pytest.raises(ConfigError, match="new_name_overlap"):
        WorldConfig(new_name_overlap=1.5)
