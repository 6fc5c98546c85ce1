"""Freezing: frozen parameters stay bit-identical through a fit and leave the optimizer."""

from __future__ import annotations

import pytest
import torch

from halluc_cl.errors import ConfigError
from halluc_cl.lm.loading import load_causal_lm
from halluc_cl.methods import Freeze
from halluc_cl.synthetic.resolve import resolve


@pytest.mark.parametrize("groups, mode, frozen_if", [
    (["attention"], "train_only", lambda n: ".attn." not in n),
    (["mlp"], "freeze", lambda n: ".mlp." in n),
])
def test_frozen_parameters_are_bit_identical_after_fit(fit_tiny, groups, mode, frozen_if):
    base = dict(load_causal_lm(resolve("synthetic://tiny")).named_parameters())
    freeze = Freeze(groups=groups, mode=mode)
    module, trainer = fit_tiny([freeze], epochs=2, lr=3e-3)
    params = dict(module.student.named_parameters())
    assert freeze.frozen == [n for n in params if frozen_if(n)]
    for name, p in params.items():
        if frozen_if(name):
            assert torch.equal(p, base[name]), name
            assert not p.requires_grad
        else:
            assert not torch.equal(p, base[name]), name
    in_optimizer = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    assert in_optimizer == {id(p) for n, p in params.items() if not frozen_if(n)}


def test_freezing_everything_is_an_error(tiny_model_dir):
    from halluc_cl.train.module import FactSFTModule

    module = FactSFTModule("synthetic://tiny")
    module.load_model()
    with pytest.raises(ConfigError, match="no trainable parameter"):
        Freeze(groups=["regex:."]).setup(module.fit_context())


@pytest.mark.parametrize("kwargs, match", [({"groups": []}, "at least one group"),
                                           ({"groups": ["mlp"], "mode": "thaw"}, "mode")])
def test_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Freeze(**kwargs)


def test_group_matching_nothing_is_an_error(tiny_model_dir):
    from halluc_cl.train.module import FactSFTModule

    module = FactSFTModule("synthetic://tiny")
    module.load_model()
    with pytest.raises(ConfigError, match="matches nothing"):
        Freeze(groups=["regex:q_proj"]).setup(module.fit_context())
