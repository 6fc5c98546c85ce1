"""Config files by path or by the name of a config that ships with the package.

The configs live inside the package (``halluc_cl/configs/``, installed with it; a checkout
links ``configs`` to that folder), so every command works from any folder::

    halluc-cl fit --config distill                    # halluc_cl/configs/distill.yaml
    halluc-cl fit --config sft --config world/tiny
    halluc-cl compare --config compare/tiny --dry_run true
    halluc-cl fit --config configs/distill.yaml       # a checkout's path, here or anywhere

A config value that is an existing file is that file. Otherwise it is the name of a shipped
config: ``<name>`` or ``<name>.yaml`` under ``halluc_cl/configs/``, with a leading ``configs/``
dropped (so the documented ``configs/...`` paths also work outside a checkout).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import yaml

from halluc_cl.errors import ConfigError, DataError
from halluc_cl.io import read_text

SHIPPED = Path(__file__).resolve().parents[1] / "configs"
CONFIG_FLAGS = ("--config", "-c")
SUFFIXES = (".yaml", ".yml", ".json")


def shipped_candidates(name: str) -> list[Path]:
    """The files under ``SHIPPED`` that the name ``name`` may mean, in the order tried."""
    pure = PurePosixPath(name)
    if not name or pure.is_absolute():
        return []
    if pure.parts[0] == "configs" and len(pure.parts) > 1:
        pure = PurePosixPath(*pure.parts[1:])
    names = [pure] if pure.suffix in SUFFIXES else [pure, pure.with_name(pure.name + ".yaml")]
    return [SHIPPED / p for p in names]


def candidates(name: str, base: str | Path | None = None) -> list[Path]:
    """Where the config ``name`` is looked for: ``base / name`` (``base``: the working
    directory when ``None``), then the shipped configs of that name."""
    return [Path(name) if base is None else Path(base) / name, *shipped_candidates(name)]


def find(name: str, base: str | Path | None = None) -> Path | None:
    """The first of ``candidates(name, base)`` that is a file, or ``None``.

    >>> find("sft") == SHIPPED / "sft.yaml"
    True
    """
    local, *shipped = candidates(name, base)
    if local.is_file():
        return local
    inside = [p for p in shipped if p.is_file() and p.resolve().is_relative_to(SHIPPED)]
    return inside[0] if inside else None


def method_configs(method: str) -> list[Path]:
    """The shipped configs of a method, in order: ``sft.yaml`` is the whole base config; every
    other method, the default distillation included, is its overlay ``method/<method>.yaml``
    on top of it (``configs/distill.yaml`` is the same fit written out whole, for the quick
    start; tests/test_cli.py keeps the two equal).

    >>> [p.relative_to(SHIPPED).as_posix() for p in method_configs("l2")]
    ['sft.yaml', 'method/l2.yaml']

    Raises:
        ConfigError: no shipped config or overlay of that name.
    """
    if method == "sft":
        return [SHIPPED / "sft.yaml"]
    overlay = SHIPPED / "method" / f"{method}.yaml"
    if not overlay.is_file():
        known = sorted(p.stem for p in (SHIPPED / "method").glob("*.yaml"))
        raise ConfigError(f"no shipped method {method!r}; the methods are sft and "
                          f"{', '.join(known)}")
    return [SHIPPED / "sft.yaml", overlay]


def looked_for(name: str, base: str | Path | None = None) -> str:
    """The places ``find`` looks at, for an error message."""
    return ", ".join(str(p.absolute()) for p in candidates(name, base))


def locate(name: str, base: str | Path | None = None) -> Path:
    """The config file ``name`` means (``find``).

    Raises:
        ConfigError: Neither a file nor a shipped config; the message lists where it looked.
    """
    path = find(name, base)
    if path is None:
        raise ConfigError(f"config {name!r} is neither a file nor a shipped config (looked for "
                          f"{looked_for(name, base)})")
    return path


def shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies inside it, else absolute."""
    absolute = path.absolute()
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(absolute)


def _is_file_name(value: str) -> bool:
    """Whether a config value reads as a file name, not as inline YAML or JSON content."""
    text = value.strip()
    return bool(text) and text != "-" and "\n" not in text and ": " not in text \
        and not text.startswith(("{", "["))


def config_args(args: list[str]) -> list[str]:
    """``args`` with each ``--config`` (``-c``) value that names a shipped config, not a file,
    replaced by that config's path; inline config content is kept as it is. Every config file
    is read as UTF-8 here, so a byte that is not UTF-8 is an error naming its line
    (jsonargparse would end in a ``UnicodeDecodeError``).

    Raises:
        ConfigError: A value is neither a file nor a shipped config.
        DataError: A config file is not UTF-8 text.
    """
    out, i = [], 0
    while i < len(args):
        arg = args[i]
        if arg in CONFIG_FLAGS and i + 1 < len(args):
            out += [arg, _config_value(args[i + 1])]
            i += 2
            continue
        if arg.startswith("--config="):
            arg = "--config=" + _config_value(arg.removeprefix("--config="))
        out.append(arg)
        i += 1
    return out


def _config_value(value: str) -> str:
    if not _is_file_name(value):
        return value
    path = value if Path(value).is_file() else str(locate(value))
    read_text(path)
    return path


def setting_folder(args: list[str], key: str) -> Path | None:
    """The folder of the config file among ``args`` (after ``config_args``) that sets the
    top-level ``key`` last, or ``None`` when the command line (``--<key>``, or inline config
    content) sets it after that file, or no file sets it."""
    folder, i = None, 0
    while i < len(args):
        arg, value = args[i], None
        if arg in CONFIG_FLAGS and i + 1 < len(args):
            value, i = args[i + 1], i + 1
        elif arg.startswith("--config="):
            value = arg.removeprefix("--config=")
        elif arg == f"--{key}" or arg.startswith(f"--{key}="):
            folder = None
        if value is not None:
            is_file = _is_file_name(value) and Path(value).is_file()
            try:
                content = yaml.safe_load(read_text(value) if is_file else value)
            except (OSError, DataError, yaml.YAMLError):
                content = None  # jsonargparse reports it
            if isinstance(content, dict) and key in content:
                folder = Path(value).parent if is_file else None
        i += 1
    return folder
