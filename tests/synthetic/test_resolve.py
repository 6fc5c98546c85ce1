"""``synthetic://`` specs: resolved to the preset's built base model, other specs unchanged."""

from __future__ import annotations

import pytest

from halluc_cl.errors import ConfigError
from halluc_cl.synthetic import resolve as resolve_module
from halluc_cl.synthetic.presets import PRESETS, preset
from halluc_cl.synthetic.resolve import is_synthetic, resolve, world_name, world_of


def test_synthetic_spec_builds_the_world(monkeypatch, tmp_path):
    monkeypatch.setattr(resolve_module, "build_base_model", lambda world: tmp_path / world)
    assert resolve("synthetic://tiny") == str(tmp_path / "tiny")
    assert resolve("synthetic://") == str(tmp_path / "default")
    assert resolve("smollm2-135m-instruct") == "smollm2-135m-instruct"  # not built
    assert is_synthetic("synthetic://tiny") and not is_synthetic("./synthetic")
    assert world_name("synthetic://capacity") == "capacity"


def test_one_registry_names_every_preset():
    assert {"default", "tiny", "capacity", "default-uuid", "tiny-small"} <= set(PRESETS)
    # a model-size variant shares its world, not its model
    assert preset("default-small").world == preset("default").world
    assert preset("default-small").model != preset("default").model
    assert world_of("synthetic://tiny").config == preset("tiny").world
    assert world_of("facts.jsonl") is None
    with pytest.raises(ConfigError, match="unknown synthetic world 'huge'; presets: "):
        preset("huge")
