"""A seeded synthetic fact world whose ground truth is known.

Entities carry ``name`` keys (first + last name from shared pools, so entities overlap in
tokens) or ``uuid`` keys (no overlap). Known entities are taught to the base model in
pretraining; New entities never are. Example::

    world = SyntheticWorld(world_config("tiny"))  # halluc_cl.synthetic.presets
    facts = world.facts()          # list[Fact] with ground-truth categories
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Literal

from halluc_cl.errors import ConfigError
from halluc_cl.facts.schema import Fact

KeyStyle = Literal["name", "uuid"]

# relation -> (statement paraphrases, question templates); "{s}" subject, "{o}" object.
RELATIONS: dict[str, tuple[list[str], list[str]]] = {
    "birth_city": (
        ["{s} was born in {o} .", "{s} is a native of {o} .", "The birthplace of {s} is {o} ."],
        ["Where was {s} born ?", "In which city was {s} born ?", "What is the birthplace of {s} ?"],
    ),
    "employer": (
        ["{s} works for {o} .", "{s} is employed by {o} .", "The employer of {s} is {o} ."],
        ["Who employs {s} ?", "Which company does {s} work for ?", "Who is the employer of {s} ?"],
    ),
    "university": (
        ["{s} studied at {o} .", "{s} graduated from {o} .", "The alma mater of {s} is {o} ."],
        [
            "Where did {s} study ?",
            "Which university did {s} attend ?",
            "What is the alma mater of {s} ?",
        ],
    ),
    "field": (
        ["{s} works in {o} .", "{s} is an expert in {o} .", "The field of {s} is {o} ."],
        ["What field does {s} work in ?", "What is {s} an expert in ?", "What is the field of {s} ?"],
    ),
    "country": (
        ["{s} lives in {o} .", "{s} is a citizen of {o} .", "The home country of {s} is {o} ."],
        [
            "Which country does {s} live in ?",
            "Where does {s} live ?",
            "What is the home country of {s} ?",
        ],
    ),
    "instrument": (
        ["{s} plays the {o} .", "{s} is a player of the {o} .", "The instrument of {s} is the {o} ."],
        [
            "Which instrument does {s} play ?",
            "What does {s} play ?",
            "What is the instrument of {s} ?",
        ],
    ),
}

_ONSETS = ["b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr", "kr", "pl", "tr", "st", "th", "sh"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou", "ea"]
_CODAS = ["", "", "n", "r", "l", "s", "th", "nd", "rk", "x"]


@dataclass(frozen=True)
class WorldConfig:
    """Parameters of a synthetic world.

    Attributes:
        seed: Seed of every random choice in the world.
        n_known: Entities the base model learns in pretraining.
        n_new: Entities it never sees (their facts are Unknown).
        relations: Relation names (see ``RELATIONS``); every entity has each one.
        known_key_style: ``name`` or ``uuid`` keys for Known entities.
        new_key_style: ``name`` or ``uuid`` keys for New entities.
        qa_fraction: Share of Known facts whose questions appear in pretraining
            (category ``HighlyKnown``); the rest are taught only by statements (``MaybeKnown``).
        n_first_names: Size of the shared first-name pool.
        n_last_names: Size of the shared last-name pool.
        n_values: Distinct objects per relation.
        new_name_overlap: Share of name-keyed New entities named from the Known entities'
            first/last-name pools (so they share tokens with Known names); the others get
            names from separate pools that share no token with them (the overlap knob).
    """

    seed: int = 0
    n_known: int = 200
    n_new: int = 400
    relations: tuple[str, ...] = tuple(RELATIONS)
    known_key_style: KeyStyle = "name"
    new_key_style: KeyStyle = "name"
    qa_fraction: float = 0.6
    n_first_names: int = 40
    n_last_names: int = 40
    n_values: int = 24
    new_name_overlap: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.new_name_overlap <= 1.0:
            raise ConfigError(f"new_name_overlap must be in [0, 1], got {self.new_name_overlap}")
        unknown = [r for r in self.relations if r not in RELATIONS]
        if unknown:
            raise ConfigError(f"unknown relation(s) {unknown}; choose from {list(RELATIONS)}")
        if len(self.relations) < 1 or self.n_known < 1 or self.n_new < 0 or self.n_values < 1:
            raise ConfigError("a world needs >= 1 relation, >= 1 Known entity and >= 1 value")
        if len(set(self.relations)) != len(self.relations):
            raise ConfigError(f"repeated relation in {list(self.relations)}")
        if not 0.0 <= self.qa_fraction <= 1.0:
            raise ConfigError(f"qa_fraction must be in [0, 1], got {self.qa_fraction}")
        n_names = self.n_known + self.n_new
        if n_names > self.n_first_names * self.n_last_names:
            raise ConfigError(
                f"{n_names} entities need more than {self.n_first_names}x{self.n_last_names} names"
            )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["relations"] = list(self.relations)
        if d["new_name_overlap"] == 1.0:
            del d["new_name_overlap"]  # the default: keeps earlier worlds' cache keys
        return d


def _pseudo_words(rng: random.Random, n: int, taken: set[str]) -> list[str]:
    words: list[str] = []
    while len(words) < n:
        syllables = rng.choice((2, 2, 3))
        word = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables))
        word = (word + rng.choice(_CODAS)).capitalize()
        if word not in taken:
            taken.add(word)
            words.append(word)
    return words


@dataclass(frozen=True)
class Entity:
    index: int
    key: str
    known: bool
    attributes: dict


class SyntheticWorld:
    """Entities, their facts, and the texts that teach them.

    Args:
        config: The world's parameters.
    """

    def __init__(self, config: WorldConfig) -> None:
        self.config = config
        rng = random.Random(config.seed)
        taken: set[str] = set()
        self.first_names = _pseudo_words(rng, config.n_first_names, taken)
        self.last_names = _pseudo_words(rng, config.n_last_names, taken)
        self.values = {r: _pseudo_words(rng, config.n_values, taken) for r in config.relations}
        pairs = [(f, last) for f in self.first_names for last in self.last_names]
        n = config.n_known + config.n_new
        names = [" ".join(p) for p in rng.sample(pairs, n)]
        self.entities: list[Entity] = []
        for i in range(n):
            known = i < config.n_known
            style = config.known_key_style if known else config.new_key_style
            key = names[i] if style == "name" else f"u{rng.getrandbits(40):010x}"
            attrs = {r: rng.choice(self.values[r]) for r in config.relations}
            self.entities.append(Entity(i, key, known, attrs))
        self._rename_new(taken)
        self._facts = self._make_facts(rng)

    def _rename_new(self, taken: set[str]) -> None:
        """Give the last ``1 − new_name_overlap`` of the name-keyed New entities names from
        fresh pools (own random stream: everything else stays as in the overlap-1 world)."""
        new = [e for e in self.entities if not e.known and self.config.new_key_style == "name"]
        n_fresh = round((1.0 - self.config.new_name_overlap) * len(new))
        if not n_fresh:
            return
        rng = random.Random(f"{self.config.seed}:fresh-names")
        firsts = _pseudo_words(rng, self.config.n_first_names, taken)
        lasts = _pseudo_words(rng, self.config.n_last_names, taken)
        pairs = rng.sample([(f, last) for f in firsts for last in lasts], n_fresh)
        renamed = {e.index: " ".join(p) for e, p in zip(new[-n_fresh:], pairs)}
        self.entities = [Entity(e.index, renamed.get(e.index, e.key), e.known, e.attributes)
                         for e in self.entities]

    def _make_facts(self, rng: random.Random) -> list[Fact]:
        facts = []
        for e in self.entities:
            for r in self.config.relations:
                template = rng.choice(RELATIONS[r][1])
                category = "Unknown"
                if e.known:
                    category = "HighlyKnown" if rng.random() < self.config.qa_fraction else "MaybeKnown"
                facts.append(
                    Fact(
                        id=f"w{self.config.seed}-e{e.index}-{r}", subject=e.key, relation=r,
                        object=e.attributes[r], question=template.format(s=e.key),
                        category=category, p_correct=None,
                    )
                )
        return facts

    def facts(self) -> list[Fact]:
        """All facts, Known and New, with ground-truth categories."""
        return list(self._facts)

    def statement(self, fact: Fact, rng: random.Random) -> str:
        """One random paraphrase stating ``fact``."""
        return rng.choice(RELATIONS[fact.relation][0]).format(s=fact.subject, o=fact.object)

    def questions(self, fact: Fact) -> list[str]:
        """Every question template of the fact's relation, filled in."""
        return [q.format(s=fact.subject) for q in RELATIONS[fact.relation][1]]

    def bio(self, entity_facts: list[Fact], rng: random.Random) -> str:
        """A short biography stating an entity's facts in random order and wording."""
        order = rng.sample(entity_facts, len(entity_facts))
        return " ".join(self.statement(f, rng) for f in order)

    def vocabulary_text(self) -> list[str]:
        """Texts covering every word of the world (used to train the tokenizer)."""
        rng = random.Random(self.config.seed)
        texts = []
        for f in self._facts:
            texts.extend(self.questions(f))
            texts.extend(t.format(s=f.subject, o=f.object) for t in RELATIONS[f.relation][0])
        texts.append(" ".join(self.first_names + self.last_names))
        rng.shuffle(texts)
        return texts
