"""The hash of a fit's fully resolved config: what ``summary.json`` records and what keys a
compare cell's folder, so that a changed setting (in a file, on the command line or in a
class default) is a new cell, never a silent reuse of an old one.

Keys that decide where results go or how they are shown, not what they are, are left out:
the logger (its folder, name and version), the progress bar, the checkpoint folder, the
artifact options, ``ckpt_path`` (a resumed fit is the same run) and the config file names.
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


def config_hash(resolved: dict) -> str:
    """sha256 (hex) of a resolved ``fit`` config (a plain dict), ``VOLATILE`` keys aside.

    >>> a = {"model": {"lr": 1}, "trainer": {"logger": {"save_dir": "x"}}}
    >>> b = {"trainer": {"logger": {"save_dir": "y"}}, "model": {"lr": 1}}
    >>> config_hash(a) == config_hash(b) != config_hash({"model": {"lr": 2}})
    True
    """
    cfg = json.loads(json.dumps(resolved, default=str))
    for key in VOLATILE:
        _drop(cfg, key)
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()
