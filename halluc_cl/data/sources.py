"""Fact sources behind ``--data.source``, and the few-shot exemplar pool of a source.

Usage::

    from halluc_cl.data.sources import exemplar_pool, load_source
    facts = load_source("geonames://?relations=country_capital&max_per_relation=100")
    probe_facts, exemplars = exemplar_pool(facts)

Source specs:

- ``synthetic://<world>``: the synthetic world's facts (its base model is built on first use).
- ``path/to/facts.jsonl``, or a folder holding ``facts.jsonl``: fact records (docs/data.md).
- ``path/to/EntityQuestions/dataset``: a folder with ``train/``, ``dev/``, ``test/`` holding
  ``P*.json`` files; every split and relation, the split in the id (``eq-P17-dev-3``).
- ``entity_questions://<path>?relations=in_distribution&splits=train,test``: the same with
  options ``relations`` (``in_distribution``, ``ood``, ``all`` or P ids, comma-separated) and
  ``splits``.
- ``geonames://?relations=city_country,country_capital&min_population=500000&max_per_relation=300``:
  offline GeoNames facts (options ``relations``, ``min_population``, ``max_per_relation``,
  ``seed``; see ``halluc_cl/data/geonames.py``).
- ``hf:<dataset id or local path>?split=test&columns=popqa``: a Hugging Face ``datasets``
  table, saved locally or on the hub, with a column mapping onto the fact schema (see
  ``halluc_cl/data/hf_source.py``).

Real sources carry no ``category`` until the probe command has written one.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from pathlib import Path
from urllib.parse import parse_qsl

from halluc_cl.data.entity_questions import SPLITS, dataset_root, read_entity_questions, split_of
from halluc_cl.data.geonames import geonames_facts
from halluc_cl.data.hf_source import HF, HF_OPTIONS, hf_facts
from halluc_cl.errors import ConfigError, DataError
from halluc_cl.facts.schema import Fact, read_facts
from halluc_cl.synthetic.resolve import is_synthetic, world_facts

GEONAMES = "geonames://"
ENTITY_QUESTIONS = "entity_questions://"
GEONAMES_OPTIONS = {"relations": "list", "min_population": "int", "max_per_relation": "int",
                    "seed": "int"}
ENTITY_QUESTIONS_OPTIONS = {"relations": "str", "splits": "list"}


def parse_options(source: str, scheme: str, valid: dict[str, str]) -> tuple[str, dict]:
    """Split ``<scheme><rest>?k=v&...`` into ``rest`` and typed options.

    Args:
        source: The source spec.
        scheme: Its scheme prefix, e.g. ``geonames://``.
        valid: Option name -> type (``int``, ``str`` or ``list``, a comma-separated list).

    Raises:
        ConfigError: an unknown, repeated, empty or mistyped option.
    """
    rest, _, query = source[len(scheme):].partition("?")
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ConfigError(f"{source}: malformed options {query!r}; use key=value&key=value") \
            from None
    options: dict = {}
    for key, value in pairs:
        if key not in valid:
            raise ConfigError(f"{source}: unknown option {key!r}; valid options: "
                              f"{', '.join(valid)}")
        if key in options:
            raise ConfigError(f"{source}: option {key!r} given twice")
        if not value:
            raise ConfigError(f"{source}: option {key!r} has no value")
        if valid[key] == "int":
            try:
                options[key] = int(value)
            except ValueError:
                raise ConfigError(f"{source}: option {key!r} must be an integer, "
                                  f"got {value!r}") from None
        elif valid[key] == "list":
            options[key] = [v.strip() for v in value.split(",") if v.strip()]
        else:
            options[key] = value
    return rest, options


def _entity_questions(path: str | Path, relations=None, splits=SPLITS) -> list[Fact]:
    per_split = read_entity_questions(path, relations, tuple(splits))
    return [f for s in per_split for f in per_split[s]]


def load_source(source: str) -> list[Fact]:
    """Facts of a source spec (see the module docstring); category None unless the file has one.

    Raises:
        ConfigError: a malformed ``geonames://``, ``entity_questions://`` or ``hf:`` spec.
        DataError: a missing or malformed source.
    """
    if is_synthetic(source):
        return world_facts(source)
    if source.startswith(GEONAMES):
        rest, options = parse_options(source, GEONAMES, GEONAMES_OPTIONS)
        if rest.strip("/"):
            raise ConfigError(f"{source}: write options after '?', e.g. "
                              "geonames://?relations=country_capital")
        return geonames_facts(**options)
    if source.startswith(HF):
        rest, options = parse_options(source, HF, HF_OPTIONS)
        return hf_facts(rest, **options)
    if source.startswith(ENTITY_QUESTIONS):
        rest, options = parse_options(source, ENTITY_QUESTIONS, ENTITY_QUESTIONS_OPTIONS)
        if not rest:
            raise ConfigError(f"{source}: no folder; use entity_questions://<path>?...")
        return _entity_questions(rest, **options)
    path = Path(source).expanduser()
    if path.is_dir() and not (path / "facts.jsonl").is_file() and dataset_root(path):
        return _entity_questions(path)
    return read_facts(path / "facts.jsonl" if path.is_dir() else path)


def exemplar_pool(
    facts: list[Fact], share: float = 0.1, min_per_relation: int = 4, seed: int = 0,
) -> tuple[list[Fact], list[Fact]]:
    """Split facts into those to probe and a per-relation pool of few-shot exemplars.

    A relation with EntityQuestions ``dev`` facts takes them as its exemplars (as in Gekhman
    et al. 2024); any other relation holds out a seeded ``max(min_per_relation,
    ceil(share * n))`` of its ``n`` facts (at most ``n - 1``). Probe facts that ask an
    exemplar's (subject, relation) are dropped, so no prompt shows the answer.

    Args:
        facts: The source's facts.
        share: Share of a relation's facts held out as exemplars.
        min_per_relation: Fewest exemplars held out per relation (where it has more facts).
        seed: Seed of the hold-out.

    Returns:
        ``(probe_facts, exemplars)``, each in the input order; disjoint, and every relation of
        ``probe_facts`` has exemplars.

    Raises:
        ConfigError: ``share`` outside [0, 1) or ``min_per_relation < 1``.
        DataError: a relation with a single fact, which cannot give both.
    """
    if not 0.0 <= share < 1.0 or min_per_relation < 1:
        raise ConfigError(f"need 0 <= share < 1 and min_per_relation >= 1, got share={share}, "
                          f"min_per_relation={min_per_relation}")
    by_relation: dict[str, list[int]] = defaultdict(list)
    for i, f in enumerate(facts):
        by_relation[f.relation].append(i)
    held: set[int] = set()
    for rel, idx in by_relation.items():
        dev = [i for i in idx if split_of(facts[i]) == "dev"]
        if dev and len(dev) < len(idx):
            held.update(dev)
            continue
        if len(idx) < 2:
            raise DataError(f"relation {rel!r} has {len(idx)} fact(s); an exemplar pool needs "
                            "at least 2 per relation")
        k = min(max(min_per_relation, math.ceil(share * len(idx))), len(idx) - 1)
        held.update(random.Random(f"{seed}:{rel}").sample(idx, k))
    exemplars = [facts[i] for i in sorted(held)]
    shown = {(f.subject, f.relation) for f in exemplars}
    probe = [f for i, f in enumerate(facts)
             if i not in held and (f.subject, f.relation) not in shown]
    return probe, exemplars
