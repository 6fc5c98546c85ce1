"""The hash of a fit's fully resolved config: what ``summary.json`` records and what keys a
compare cell's folder, so that a changed setting (in a file, on the command line or in a
class default) is a new cell, never a silent reuse of an old one.

Keys that decide where results go or how they are shown, not what they are, are left out:
the logger (its folder, name and version), the progress bar, the checkpoint folder, the
artifact options, ``ckpt_path`` (a resumed fit is the same run) and the config file names.
A plugin is hashed under one name whichever of its two class paths a config uses
(``halluc_cl.methods.<Name>``, or ``halluc_cl.regularizers.<Name>``, the package's former
name, which the results made before the move were hashed under). A setting added later is
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
ADDED = {"data.distill_select": "random", "model.lasting_window": 3}


def _get(cfg: dict, dotted: str) -> object:
    for key in dotted.split("."):
        cfg = cfg.get(key) if isinstance(cfg, dict) else None
    return cfg


# a plugin's current class path prefix -> the one it is hashed under (its first name)
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


def config_hash(resolved: dict) -> str:
    """sha256 (hex) of a resolved ``fit`` config (a plain dict), ``VOLATILE`` keys aside.

    >>> a = {"model": {"lr": 1}, "trainer": {"logger": {"save_dir": "x"}}}
    >>> b = {"trainer": {"logger": {"save_dir": "y"}}, "model": {"lr": 1}}
    >>> config_hash(a) == config_hash(b) != config_hash({"model": {"lr": 2}})
    True
    >>> new = {"model": {"regularizers": [{"class_path": "halluc_cl.methods.EWC"}]}}
    >>> old = {"model": {"regularizers": [{"class_path": "halluc_cl.regularizers.EWC"}]}}
    >>> config_hash(new) == config_hash(old)
    True
    >>> before = {"data": {"extra_per_batch": 16}}
    >>> config_hash(before) == config_hash({"data": {"extra_per_batch": 16,
    ...                                              "distill_select": "random"}})
    True
    """
    cfg = json.loads(json.dumps(resolved, default=str))
    for key in VOLATILE:
        _drop(cfg, key)
    for key, default in ADDED.items():
        if _get(cfg, key) == default:
            _drop(cfg, key)
    _one_name(cfg)
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()
