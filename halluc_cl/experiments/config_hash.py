"""The hash of a fit's fully resolved config: what ``summary.json`` records and what keys a
compare cell's folder, so that a changed setting (in a file, on the command line or in a
class default) is a new cell, never a silent reuse of an old one.

Keys that decide where results go or how they are shown, not what they are, are left out:
the logger (its folder, name and version), the progress bar, the checkpoint folder, the
artifact options, ``ckpt_path`` (a resumed fit is the same run) and the config file names.
Renamed things are hashed under the names the results made before the rename were hashed
under, so that those results keep their cells: a method's class path
(``halluc_cl.methods.<Name>``, formerly ``halluc_cl.regularizers.<Name>``) and the settings
of ``RENAMED`` (``model.methods``, formerly ``model.regularizers``; ``data.extra_select``,
formerly ``data.distill_select``). The old names are deprecated and go in 0.3.0; this
mapping stays as long as results made under them are kept. A setting added later is
left out while it has its default (``ADDED``), so that the cells made before it keep their
hash: they ran with what the default does.
"""

from __future__ import annotations

import hashlib
import json

VOLATILE = ("trainer.logger", "trainer.enable_progress_bar", "trainer.default_root_dir",
            "trainer.enable_model_summary", "checkpoint.dirpath", "artifacts", "ckpt_path",
            "config", "print_config")


def _drop(cfg: dict, dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        cfg = cfg.get(key)
        if not isinstance(cfg, dict):
            return
    cfg.pop(leaf, None)


# settings added after results were made -> their default, which adds nothing to a hash
ADDED = {"data.distill_select": "random", "model.lasting_window": 3,
         "data.prompt.chat": False, "data.prompt.init_args.chat": False,
         "model.loss_positions": "all"}


def _get(cfg: dict, dotted: str) -> object:
    for key in dotted.split("."):
        cfg = cfg.get(key) if isinstance(cfg, dict) else None
    return cfg


# a setting's current name -> the one it is hashed under (its first name)
RENAMED = {"model.methods": "model.regularizers", "data.extra_select": "data.distill_select"}
# a method's current class path prefix -> the one it is hashed under (its first name)
MOVED = {"halluc_cl.methods.": "halluc_cl.regularizers."}


def _one_name(node: object) -> None:
    """Rewrite every ``class_path`` of a moved plugin (``MOVED``) in place, at any depth."""
    if isinstance(node, list):
        for item in node:
            _one_name(item)
    if not isinstance(node, dict):
        return
    path = node.get("class_path")
    for new, old in MOVED.items():
        name = path[len(new):] if isinstance(path, str) and path.startswith(new) else ""
        if name.isidentifier():  # the package-level name, not a submodule's
            node["class_path"] = old + name
    for value in node.values():
        _one_name(value)


def _old_names(cfg: dict) -> None:
    """Move every setting of ``RENAMED`` to its old name, in place (the deprecated old name,
    if a config still sets it, wins: the module refuses both set at once)."""
    for new, old in RENAMED.items():
        value = _get(cfg, new)
        _drop(cfg, new)
        *parents, leaf = old.split(".")
        node = cfg
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and node.get(leaf) is None and value is not None:
            node[leaf] = value


def config_hash(resolved: dict) -> str:
    """sha256 (hex) of a resolved ``fit`` config (a plain dict), ``VOLATILE`` keys aside.

    >>> a = {"model": {"lr": 1}, "trainer": {"logger": {"save_dir": "x"}}}
    >>> b = {"trainer": {"logger": {"save_dir": "y"}}, "model": {"lr": 1}}
    >>> config_hash(a) == config_hash(b) != config_hash({"model": {"lr": 2}})
    True
    >>> new = {"model": {"methods": [{"class_path": "halluc_cl.methods.EWC"}],
    ...                  "regularizers": None}}
    >>> old = {"model": {"regularizers": [{"class_path": "halluc_cl.regularizers.EWC"}]}}
    >>> config_hash(new) == config_hash(old)
    True
    >>> before = {"data": {"extra_per_batch": 16}}
    >>> config_hash(before) == config_hash({"data": {"extra_per_batch": 16,
    ...                                              "extra_select": "random",
    ...                                              "distill_select": None}})
    True
    """
    cfg = json.loads(json.dumps(resolved, default=str))
    for key in VOLATILE:
        _drop(cfg, key)
    _old_names(cfg)
    for key, default in ADDED.items():
        if _get(cfg, key) == default:
            _drop(cfg, key)
    _one_name(cfg)
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()
