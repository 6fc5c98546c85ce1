"""split_facts: held-out validation/test sets, subject- or fact-disjoint from every
training-side set, on hand-built facts."""

import pytest

from halluc_cl.data.splits import SplitSpec, split_facts
from halluc_cl.errors import ConfigError
from halluc_cl.facts.schema import Fact

RELATIONS = ("born", "works", "plays")


def facts(n_known_subjects=30, n_unknown_subjects=20, maybe=True) -> list[Fact]:
    out = []
    for s in range(n_known_subjects):
        for r in RELATIONS:
            cat = "MaybeKnown" if maybe and r == "plays" else "HighlyKnown"
            out.append(Fact(f"k{s}-{r}", f"Known {s}", r, f"o{s}{r}", f"Q {r} Known {s} ?",
                            category=cat))
    for s in range(n_unknown_subjects):
        for r in RELATIONS:
            out.append(Fact(f"u{s}-{r}", f"New {s}", r, f"x{s}{r}", f"Q {r} New {s} ?",
                            category="Unknown"))
    return out


def spec(**kw) -> SplitSpec:
    return SplitSpec(**{"unknown_fraction": 0.5, "n_train": 20, "n_heldout": 10,
                        "n_heldout_val": 8, **kw})


def training_side(s) -> list[Fact]:
    return s.known_train + s.unknown_train + s.pool


def test_subject_disjoint_keeps_every_fact_of_a_heldout_subject_out():
    data = facts()
    s = split_facts(data, spec())
    assert len(s.heldout_test) == 10 and len(s.heldout_val) == 8
    test_subjects = {f.subject for f in s.heldout_test}
    val_subjects = {f.subject for f in s.heldout_val}
    assert not test_subjects & val_subjects
    assert not (test_subjects | val_subjects) & {f.subject for f in training_side(s)}
    # two HighlyKnown facts per subject: 5 test subjects, 4 val subjects
    assert len(test_subjects) == 5 and len(val_subjects) == 4 and s.heldout_subjects == 9
    assert len(s.known_train) == 10 and len(s.unknown_train) == 10
    # the pool: Known-category facts of other subjects only, nothing used elsewhere
    used = {f.id for f in s.heldout_test + s.heldout_val + s.known_train + s.unknown_train}
    assert s.pool and not {f.id for f in s.pool} & used
    assert {f.category for f in s.pool} == {"HighlyKnown"}
    # 30 subjects x 2 HighlyKnown facts = 60; 18 held out, 10 trained, 9 subjects lost
    assert len(s.pool) == 60 - 2 * 9 - 10


def test_fact_disjoint_keeps_only_the_heldout_pairs_out():
    s = split_facts(facts(), spec(disjoint="fact"))
    pairs = {(f.subject, f.relation) for f in s.heldout_test + s.heldout_val}
    assert not pairs & {(f.subject, f.relation) for f in training_side(s)}
    # other relations of held-out subjects are trained on or pooled (the weaker protocol)
    subjects = {f.subject for f in s.heldout_test + s.heldout_val}
    assert subjects & {f.subject for f in training_side(s)}


def test_pool_categories_widen_the_pool():
    narrow = split_facts(facts(), spec())
    wide = split_facts(facts(), spec(pool_categories=("HighlyKnown", "MaybeKnown")))
    assert "MaybeKnown" in {f.category for f in wide.pool}
    assert len(wide.pool) > len(narrow.pool)
    assert not {f.subject for f in wide.heldout_test} & {f.subject for f in wide.pool}


def test_split_seed_decides_the_split():
    a, b, c = (split_facts(facts(), spec(seed=s)) for s in (1, 1, 2))
    assert [f.id for f in a.heldout_test] == [f.id for f in b.heldout_test]
    assert [f.id for f in a.heldout_test] != [f.id for f in c.heldout_test]


@pytest.mark.parametrize("kw, message", [
    ({"n_heldout": 50}, "infeasible split"),
    ({"n_train": 200, "unknown_fraction": 0.1}, "infeasible split"),
    ({"n_train": 200, "unknown_fraction": 0.9}, "infeasible unknown_fraction"),
    ({"known_categories": ("HighlyKnown", "Unknown")}, "both Known and Unknown"),
    ({"disjoint": "entity"}, "heldout_disjoint must be"),
])
def test_infeasible_or_malformed_specs_are_refused(kw, message):
    with pytest.raises(ConfigError, match=message):
        split_facts(facts(), spec(**kw))


def test_subject_disjoint_on_a_real_source():
    """geonames: a country is the subject of capital, continent and currency facts; holding
    out one of its facts keeps all three out of training (categories as a probe writes them)."""
    import dataclasses
    import random

    from halluc_cl.data.geonames import geonames_facts

    facts = geonames_facts(["country_capital", "country_continent", "country_currency"])
    rng = random.Random(0)
    probed = [dataclasses.replace(f, category=rng.choice(["HighlyKnown", "Unknown"]))
              for f in facts]
    s = split_facts(probed, spec(n_train=40, n_heldout=20, n_heldout_val=20))
    held = {f.subject for f in s.heldout_test + s.heldout_val}
    assert len(held) >= 14  # each country holds at most 3 facts
    assert not held & {f.subject for f in training_side(s)}
    assert all(f.category == "HighlyKnown" for f in s.heldout_test + s.heldout_val)
