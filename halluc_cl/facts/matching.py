"""Answer normalisation and exact match against aliases (docs/metrics.md)."""

from __future__ import annotations

import re
import string

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)

IDK_ANSWERS = ("i don't know", "i do not know", "unknown")


def normalize_answer(text: str) -> str:
    """Lower-case, strip punctuation and articles, collapse whitespace."""
    text = text.lower().translate(_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, aliases: list[str]) -> bool:
    """True if the normalised prediction equals any normalised alias."""
    pred = normalize_answer(prediction)
    return any(pred == normalize_answer(a) for a in aliases)


def is_abstention(prediction: str, idk_answers: tuple[str, ...] = IDK_ANSWERS) -> bool:
    """True if the prediction is an explicit "I don't know"."""
    # spaces are ignored: word-level tokenizers decode "don't" as "don ' t"
    pred = normalize_answer(prediction).replace(" ", "")
    return pred in {normalize_answer(a).replace(" ", "") for a in idk_answers}
