"""Parameter freezing by named groups: freeze some groups, or train only some.

YAML (train only the attention blocks, as in the paper's attention-only baseline)::

    model:
      methods:
        - class_path: halluc_cl.methods.Freeze
          init_args: {groups: [attention], mode: train_only}

Groups: ``attention``, ``mlp``, ``embeddings``, ``lm_head``, ``norms``, ``layers[a:b]`` and
``regex:<pattern>`` (see ``halluc_cl.lm.param_groups``). Freezing applies for the whole fit
(warm-up included); frozen parameters are left out of the optimizer. GPT-2 and many small
Llamas tie ``lm_head`` to the token embeddings: the shared matrix is listed once, under
``embeddings``.
"""

from __future__ import annotations

from typing import Literal

from halluc_cl.errors import ConfigError
from halluc_cl.lm.param_groups import select
from halluc_cl.methods.base import Method
from halluc_cl.methods.context import FitContext


class Freeze(Method):
    """Sets ``requires_grad=False`` on parameter groups before training.

    Args:
        groups: Group specs (at least one); each must match some parameter.
        mode: ``freeze`` the groups, or ``train_only`` them (freeze everything else).
    """

    name = "freeze"
    setup_order = 1  # after LoRA has wrapped the model

    def __init__(self, groups: list[str], mode: Literal["freeze", "train_only"] = "freeze") -> None:
        if not groups:
            raise ConfigError("Freeze needs at least one group")
        if mode not in ("freeze", "train_only"):
            raise ConfigError(f"Freeze mode must be 'freeze' or 'train_only', got {mode!r}")
        self.groups, self.mode = list(groups), mode
        self.frozen: list[str] = []

    def setup(self, context: FitContext) -> None:
        params = dict(context.student.named_parameters())
        chosen = set(select(context.student, self.groups, params))
        frozen = chosen if self.mode == "freeze" else set(params) - chosen
        for name in frozen:
            params[name].requires_grad_(False)
        if all(not p.requires_grad for p in params.values()):
            raise ConfigError(f"Freeze(groups={self.groups}, mode={self.mode}) leaves no "
                              "trainable parameter")
        self.frozen = [n for n in params if n in frozen]
