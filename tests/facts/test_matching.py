"""Answer normalisation, alias exact match and abstention detection."""

from __future__ import annotations

import pytest

from halluc_cl.facts.matching import IDK_ANSWERS, exact_match, is_abstention, normalize_answer


@pytest.mark.parametrize("text, expected", [
    ("Paris", "paris"),
    ("PARIS", "paris"),
    ("Paris.", "paris"),
    ("St. Louis!?", "st louis"),
    ("Jean-Luc", "jeanluc"),
    ("O'Brien's", "obriens"),
    ("The Hague", "hague"),
    ("the university of the arts", "university of arts"),
    ("A man, a plan, an apple", "man plan apple"),
    ("Theatre", "theatre"),  # articles only as whole words
    ("another atheist", "another atheist"),
    ("  New \t York\n", "new york"),
    ("", ""),
    ("The", ""),
])
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_exact_match_with_aliases():
    aliases = ["Paris", "City of Light"]
    assert exact_match("paris", aliases)
    assert exact_match("  Paris. ", aliases)
    assert exact_match("the city of light", aliases)
    assert exact_match("City of Light!", aliases)
    assert not exact_match("Lyon", aliases)
    assert not exact_match("Paris France", aliases)
    assert not exact_match("Par", aliases)
    assert not exact_match("", aliases)
    assert not exact_match("paris", [])


def test_exact_match_articles_on_both_sides():
    assert exact_match("Hague", ["The Hague"])
    assert exact_match("the violin", ["violin"])


@pytest.mark.parametrize("prediction", [
    "I don't know", "i don't know.", "I DON'T KNOW!", "I do not know", "Unknown", " unknown ",
    "I dont know", "I don ' t know",  # the last as a word-level tokenizer decodes it
])
def test_is_abstention_true(prediction):
    assert is_abstention(prediction)


@pytest.mark.parametrize("prediction", [
    "I don't know Paris", "know", "Paris", "", "not known", "I know",
])
def test_is_abstention_false(prediction):
    assert not is_abstention(prediction)


def test_is_abstention_custom_answers():
    assert is_abstention("No idea.", idk_answers=("no idea",))
    assert not is_abstention("I don't know", idk_answers=("no idea",))
    assert "i don't know" in IDK_ANSWERS
