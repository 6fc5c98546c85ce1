"""The synthetic presets: one registry of named (world, base model) pairs.

``synthetic://<name>`` names a preset. Its world fixes the facts (``world.WorldConfig``), its
base model the architecture and pretraining schedule (``BaseModelConfig``); both go into the
cache key of the built model (``base_model.build_key``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from halluc_cl.errors import ConfigError
from halluc_cl.synthetic.world import WorldConfig


@dataclass(frozen=True)
class BaseModelConfig:
    """Architecture and pretraining schedule of a synthetic base model.

    Attributes:
        arch: ``gpt2`` or ``llama`` (transformers configs, random init).
        n_layer: Decoder layers.
        n_embd: Hidden size.
        n_head: Attention heads.
        epochs: Pretraining epochs (each resamples bios and question wording).
        batch_size: Sequences per step.
        lr: Peak AdamW learning rate (cosine schedule, 5 % warm-up).
        bios_per_epoch: Biographies per Known entity per epoch.
        dropout: Dropout of the pretraining run (saved in the model config).
        precision: Lightning precision for pretraining (fp32 is faster than bf16 autocast on
            CPUs without bf16 matrix units).
    """

    arch: Literal["gpt2", "llama"] = "gpt2"
    n_layer: int = 4
    n_embd: int = 128
    n_head: int = 4
    epochs: int = 100
    batch_size: int = 32
    lr: float = 2e-3
    bios_per_epoch: int = 1
    dropout: float = 0.0
    precision: str = "32-true"


@dataclass(frozen=True)
class Preset:
    """A named synthetic setting: the world and the base model pretrained on it."""

    world: WorldConfig
    model: BaseModelConfig


_TINY_WORLD = WorldConfig(
    n_known=48, n_new=48, relations=("birth_city", "employer", "field", "instrument"),
    n_first_names=12, n_last_names=12, n_values=8,
)
_TINY = BaseModelConfig(n_layer=2, n_embd=64, n_head=2, epochs=60, batch_size=16, lr=3e-3)
_SMALL = BaseModelConfig(n_layer=2, n_embd=64, n_head=2, lr=3e-3)
_LARGE = BaseModelConfig(n_layer=4, n_embd=256, n_head=4, lr=1e-3)
# the capacity study (H1): the default's Known entities and model sizes, ~10^5 New facts
# (17 000 New entities x 6 relations) named from 160 x 160 shared first/last-name pools
_CAPACITY = WorldConfig(n_new=17_000, n_first_names=160, n_last_names=160)

PRESETS: dict[str, Preset] = {
    "default": Preset(WorldConfig(), BaseModelConfig()),
    "tiny": Preset(_TINY_WORLD, _TINY),
    # the default world under base models of other sizes (the capacity ablation)
    "default-small": Preset(WorldConfig(), _SMALL),
    "default-large": Preset(WorldConfig(), _LARGE),
    # the mechanism study (H3): New entities with UUID keys, which share no token with Known
    # ones, and name keys of which only a share comes from the Known entities' name pools
    "default-uuid": Preset(WorldConfig(new_key_style="uuid"), BaseModelConfig()),
    "default-overlap0": Preset(WorldConfig(new_name_overlap=0.0), BaseModelConfig()),
    "default-overlap50": Preset(WorldConfig(new_name_overlap=0.5), BaseModelConfig()),
    "capacity": Preset(_CAPACITY, BaseModelConfig()),
    "capacity-small": Preset(_CAPACITY, _SMALL),
    "capacity-large": Preset(_CAPACITY, _LARGE),
    # tiny versions of the mechanism studies' worlds, for end-to-end tests
    "tiny-uuid": Preset(replace(_TINY_WORLD, new_key_style="uuid"), _TINY),
    "tiny-overlap0": Preset(replace(_TINY_WORLD, new_name_overlap=0.0), _TINY),
    "tiny-small": Preset(_TINY_WORLD, replace(_TINY, n_layer=1, n_embd=32)),
}


def preset(name: str) -> Preset:
    """The preset called ``name``, with a clear error for an unknown one."""
    if name not in PRESETS:
        raise ConfigError(f"unknown synthetic world {name!r}; presets: {sorted(PRESETS)}")
    return PRESETS[name]


def world_config(name: str) -> WorldConfig:
    """The world of the preset called ``name``."""
    return preset(name).world
