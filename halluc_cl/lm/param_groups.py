"""Named parameter groups (``attention``, ``mlp``, ``embeddings``, ``lm_head``, ``norms``,
``layers[a:b]``, ``regex:<pattern>``) mapped onto GPT-2, Llama, Qwen2 and Mistral names.

Used by the freezing plugin (which parameters to freeze) and by LoRA (which linear layers get
an adapter). Names may carry a wrapper prefix (peft's ``base_model.model.``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from torch import nn

from halluc_cl.errors import ConfigError

_LLAMA = {
    "attention": r"model\.layers\.\d+\.self_attn\.",
    "mlp": r"model\.layers\.\d+\.mlp\.",
    "embeddings": r"model\.embed_tokens\.",
    "lm_head": r"lm_head\.",
    "norms": r"model\.(layers\.\d+\.(input|post_attention)_layernorm|norm)\.",
    "layer": r"model\.layers\.(\d+)\.",
}
ARCH_GROUPS: dict[str, dict[str, str]] = {
    "gpt2": {
        "attention": r"transformer\.h\.\d+\.attn\.",
        "mlp": r"transformer\.h\.\d+\.mlp\.",
        "embeddings": r"transformer\.(wte|wpe)\.",
        "lm_head": r"lm_head\.",
        "norms": r"transformer\.(h\.\d+\.ln_[12]|ln_f)\.",
        "layer": r"transformer\.h\.(\d+)\.",
    },
    "llama": _LLAMA,
    "qwen2": _LLAMA,
    "mistral": _LLAMA,
}
GROUP_NAMES = ("attention", "mlp", "embeddings", "lm_head", "norms")
_LAYERS = re.compile(r"layers\[(-?\d*):(-?\d*)\]")


def _model_type(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    return getattr(config, "model_type", type(model).__name__)


def group_matcher(group: str, model_type: str, n_layers: int):
    """A predicate on parameter/module names for one group spec.

    Args:
        group: ``attention`` / ``mlp`` / ``embeddings`` / ``lm_head`` / ``norms``,
            ``layers[a:b]`` (Python slice over the transformer blocks), or ``regex:<pattern>``
            (searched in the full name).
        model_type: The HF ``config.model_type`` (``gpt2``, ``llama``, ``qwen2``, ``mistral``).
        n_layers: Number of transformer blocks (for negative slice bounds).
    """
    if group.startswith("regex:"):
        try:
            pattern = re.compile(group[len("regex:"):])
        except re.error as exc:
            raise ConfigError(f"bad regex in parameter group {group!r}: {exc}") from None
        return lambda name: pattern.search(name) is not None
    if model_type not in ARCH_GROUPS:
        raise ConfigError(f"named parameter groups are mapped for {sorted(ARCH_GROUPS)}, not "
                          f"{model_type!r}; use 'regex:<pattern>' groups")
    table = ARCH_GROUPS[model_type]
    sliced = _LAYERS.fullmatch(group)
    if sliced:
        start, stop = (int(x) if x else None for x in sliced.groups())
        chosen = set(range(n_layers)[slice(start, stop)])
        layer = re.compile(r"(?:^|\.)" + table["layer"])

        def in_layers(name: str) -> bool:
            m = layer.search(name)
            return m is not None and int(m.group(1)) in chosen

        return in_layers
    if group not in GROUP_NAMES:
        raise ConfigError(f"unknown parameter group {group!r}; use one of {list(GROUP_NAMES)}, "
                          "'layers[a:b]' or 'regex:<pattern>'")
    pattern = re.compile(r"(?:^|\.)" + table[group])
    return lambda name: pattern.search(name) is not None


def _n_layers(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    for key in ("num_hidden_layers", "n_layer"):
        if hasattr(config, key):
            return int(getattr(config, key))
    return 0


def select(model: nn.Module, groups: Iterable[str], names: Iterable[str]) -> list[str]:
    """The ``names`` (parameters or modules of ``model``) that fall in any of ``groups``.

    Raises:
        ConfigError: A group matches none of the names.
    """
    names = list(names)
    model_type, n_layers = _model_type(model), _n_layers(model)
    chosen: set[str] = set()
    for group in groups:
        match = group_matcher(group, model_type, n_layers)
        hits = {n for n in names if match(n)}
        if not hits:
            tied = " (its weights are tied to the embeddings: use 'embeddings')" \
                if group == "lm_head" else ""
            raise ConfigError(f"parameter group {group!r} matches nothing in this "
                              f"{model_type} model{tied}")
        chosen |= hits
    return [n for n in names if n in chosen]
