"""``synthetic://<preset>`` specs: the one place that turns them into a built base model.

The layers below (``lm``) load only folders, GGUF files and hub ids; a caller holding a spec
that may be synthetic passes it through ``resolve`` first, which builds the preset's base model
once (cached, ``base_model.build_base_model``) and returns its folder.
"""

from __future__ import annotations

from pathlib import Path

from halluc_cl.facts.schema import Fact, read_facts
from halluc_cl.synthetic.base_model import build_base_model
from halluc_cl.synthetic.presets import world_config
from halluc_cl.synthetic.world import SyntheticWorld

SCHEME = "synthetic://"


def is_synthetic(spec: str) -> bool:
    """Whether ``spec`` names a synthetic preset."""
    return spec.startswith(SCHEME)


def world_name(spec: str) -> str:
    """The preset a ``synthetic://`` spec names (``default`` when empty)."""
    return spec[len(SCHEME):] or "default"


def resolve(spec: str) -> str:
    """A model spec that ``halluc_cl.lm`` can load: a synthetic preset's built folder (built
    now if it is not cached), any other spec unchanged."""
    return str(build_base_model(world_name(spec))) if is_synthetic(spec) else spec


def world_facts(spec: str) -> list[Fact]:
    """Every fact of a synthetic preset's world, with its Known/Unknown category (the base
    model's ground truth, so the model is built if it is not cached)."""
    return read_facts(Path(resolve(spec)) / "facts.jsonl")


def world_of(spec: str) -> SyntheticWorld | None:
    """The generator of a synthetic spec's world (``None`` for any other spec)."""
    return SyntheticWorld(world_config(world_name(spec))) if is_synthetic(spec) else None
