"""Token overlap between entity names (the mechanism study, H3).

Two names overlap when they share word tokens, as synthetic ``name``-style keys do (they are
drawn from shared first/last-name pools) and ``uuid``-style keys do not.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"\w+")


def name_tokens(name: str) -> frozenset[str]:
    """Lower-cased word tokens of a name."""
    return frozenset(_WORD.findall(name.lower()))


def name_overlap(a: str, b: str) -> float:
    """Jaccard overlap of the word tokens of two names (0 = disjoint, 1 = same tokens)."""
    ta, tb = name_tokens(a), name_tokens(b)
    if not ta or not tb:
        return 0.0
    return len(ta & tb) / len(ta | tb)
