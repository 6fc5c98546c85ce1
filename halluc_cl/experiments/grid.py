"""The grid of a comparison: its cells (one fit each: a method's configs, an unknown
fraction, a training seed and a split seed), each keyed by the hash of its fully resolved
config, and the checks a grid passes before any fit starts (``experiments/compare.py`` runs
it)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from halluc_cl.errors import ConfigError
from halluc_cl.experiments.config_files import locate, shown
from halluc_cl.experiments.config_hash import config_hash
from halluc_cl.experiments.fit import resolved_config
from halluc_cl.io import read_text

METHOD_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")


@dataclass(frozen=True)
class Cell:
    """One fit of the grid; ``sha256`` is its resolved config's hash (``resolve``)."""

    method: str
    configs: tuple[str, ...]
    unknown_fraction: float
    seed: int
    split_seed: int | None = None
    sha256: str = field(default="", compare=False)
    processes: int = field(default=1, compare=False)  # of its fit (``resolve``)

    @property
    def data_seed(self) -> int:
        return self.seed if self.split_seed is None else self.split_seed

    @property
    def version(self) -> str:
        return (f"unk{self.unknown_fraction}_split{self.data_seed}_seed{self.seed}"
                f"_{self.sha256[:10]}")

    @property
    def name(self) -> str:
        return f"{self.method}/{self.version}"

    def run_dir(self, out: Path) -> Path:
        return out / "runs" / self.method / self.version

    def folder_args(self, out: Path) -> list[str]:
        """The ``fit`` arguments that put this cell's run in ``run_dir(out)``, whatever the
        logger (CSV and TensorBoard loggers write there too; a W&B run is named
        ``<method>/<version>``)."""
        return ["--artifacts.root", str(out / "runs"), "--artifacts.name", self.method,
                "--artifacts.version", self.version]

    def settings(self) -> list[str]:
        """The ``fit`` arguments of this cell after its ``--config`` files (folder aside)."""
        return ["--seed_everything", str(self.seed), "--data.split_seed", str(self.data_seed),
                "--data.unknown_fraction", str(self.unknown_fraction),
                "--trainer.enable_progress_bar", "false", "--artifacts.save_model", "false"]

    def args(self) -> list[str]:
        """The ``fit`` arguments that define this cell (its folder aside)."""
        return [*(a for c in self.configs for a in ("--config", c)), *self.settings()]

    def resolve(self, fit_args: list[str]) -> Cell:
        """This cell with ``sha256`` set from its fully resolved config (parsed, not run)."""
        resolved = resolved_config(["fit", *self.args(), *fit_args])
        return Cell(self.method, self.configs, self.unknown_fraction, self.seed,
                    self.split_seed, config_hash(resolved), processes_of(resolved["trainer"]))


def resolve_methods(methods: dict[str, list[str]],
                    base: str | Path | None = None) -> dict[str, list[str]]:
    """Each method's configs as file paths: ``base / <entry>`` if that is a file (``base``: the
    folder of the YAML that lists them; the working directory when ``None``), else the shipped
    config the entry names (``config_files.locate``).

    Raises:
        ConfigError: An entry is neither; the message lists where it was looked for.
    """
    resolved = {}
    for name, configs in methods.items():
        resolved[name] = []
        for entry in configs:
            try:
                path = locate(entry, base)
            except ConfigError as exc:
                raise ConfigError(f"method {name!r}: {exc}") from None
            resolved[name].append(shown(path))
    return resolved


def validate(methods: dict[str, list[str]], seeds: list[int],
             unknown_fractions: list[float], split_seeds: list[int] | None = None) -> None:
    """Raise ``ConfigError`` for an empty or malformed grid before any fit starts (a config
    that cannot be found: ``resolve_methods``)."""
    if not methods:
        raise ConfigError("compare needs at least one method in `methods`")
    for name, configs in methods.items():
        if not METHOD_NAME.match(name):
            raise ConfigError(f"method name {name!r} must be a plain folder name "
                              "(letters, digits, '_', '-', '.', '+')")
        if not configs:
            raise ConfigError(f"method {name!r} lists no config files")
    if not seeds:
        raise ConfigError("compare needs at least one seed in `seeds`")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds {seeds} repeat a value")
    if split_seeds is not None and len(split_seeds) != len(seeds):
        raise ConfigError(f"split_seeds {split_seeds} must pair with seeds {seeds} one to one")
    if not unknown_fractions:
        raise ConfigError("compare needs at least one value in `unknown_fractions`")
    bad = [x for x in unknown_fractions if not 0.0 <= x <= 1.0]
    if bad:
        raise ConfigError(f"unknown fractions {bad} are outside [0, 1]")
    if len(set(unknown_fractions)) != len(unknown_fractions):
        raise ConfigError(f"unknown fractions {unknown_fractions} repeat a value")


def pinned_fraction(configs: list[str]) -> float | None:
    """``data.unknown_fraction`` set by a method's overlay configs (all but the first), if any.

    The first config is the method's base (``configs/sft.yaml`` sets 0.5 like any full run);
    the grid overrides its fraction. An overlay that sets one, such as
    ``configs/method/known_only.yaml`` (0.0), defines the method, so the grid keeps it.
    """
    pinned = None
    for path in configs[1:]:
        try:
            cfg = yaml.safe_load(read_text(path)) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path!r} is not valid YAML: {exc}") from None
        data = cfg.get("data") if isinstance(cfg, dict) else None
        if isinstance(data, dict) and data.get("unknown_fraction") is not None:
            pinned = float(data["unknown_fraction"])
    return pinned


def grid(methods: dict[str, list[str]], seeds: list[int],
         unknown_fractions: list[float], split_seeds: list[int] | None = None) -> list[Cell]:
    """All cells (hash not yet resolved), methods in the order given, then fraction, then seed;
    ``split_seeds[i]`` pairs with ``seeds[i]`` (``None``: each split seed is its training seed).

    A method whose overlay pins the unknown fraction (see ``pinned_fraction``) gets one cell
    per seed at that fraction instead of one per grid fraction.
    """
    cells: list[Cell] = []
    for method, configs in methods.items():
        pinned = pinned_fraction(configs)
        fractions = unknown_fractions if pinned is None else [pinned]
        pairs = list(zip(seeds, split_seeds or [None] * len(seeds)))
        cells += [Cell(method, tuple(configs), float(x), int(s), sp)
                  for x in fractions for s, sp in pairs]
    return cells


def processes_of(trainer: dict) -> int:
    """How many processes a fit with this resolved ``trainer`` config starts: devices (a count,
    a list, or ``auto``/``-1``: every visible GPU, else one) times ``num_nodes``."""
    devices = trainer.get("devices", "auto")
    if isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        devices = int(devices)
    if isinstance(devices, (list, tuple)):
        count = len(devices)
    elif isinstance(devices, str) and "," in devices:
        count = len([d for d in devices.split(",") if d.strip()])
    elif devices in ("auto", -1):
        gpu = str(trainer.get("accelerator", "auto")) in ("auto", "gpu", "cuda")
        count = torch.cuda.device_count() if gpu and torch.cuda.is_available() else 1
    else:
        count = int(devices)
    return max(1, count) * int(trainer.get("num_nodes") or 1)
