"""Load a causal LM and its tokenizer from a spec: ``synthetic://<world>``, a local folder,
a GGUF file, or a Hugging Face hub id."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from halluc_cl.errors import ModelLoadError

SYNTHETIC = "synthetic://"


def is_synthetic(spec: str) -> bool:
    return spec.startswith(SYNTHETIC)


def synthetic_world_name(spec: str) -> str:
    return spec[len(SYNTHETIC):] or "default"


def _looks_like_path(spec: str) -> bool:
    # hub ids are "name" or "org/name"; anything else is meant as a path
    return spec.startswith((".", "/", "~")) or spec.count("/") > 1


def resolve(spec: str) -> tuple[str, dict]:
    """Return ``(name_or_path, extra from_pretrained kwargs)`` for a model spec."""
    if is_synthetic(spec):
        from halluc_cl.models.pretrain import build_base_model

        return str(build_base_model(synthetic_world_name(spec))), {}
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {path}")
        return str(path.parent), {"gguf_file": path.name}
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} is not a model folder (no config.json)")
        return str(path), {}
    if _looks_like_path(spec):
        raise ModelLoadError(f"model folder not found: {spec}")
    kwargs = {}
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        kwargs["local_files_only"] = True
    return spec, kwargs


def _wrap(fn, spec: str, what: str):
    try:
        return fn()
    except (OSError, ValueError) as exc:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = " (offline: HF_HUB_OFFLINE=1 and it is not in the local cache; download it " \
               "once while online or pass a local folder)" if offline else ""
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"cannot load {what} {spec!r}{hint}: {first}") from None


def load_tokenizer(spec: str):
    """Tokenizer of a model spec, with a pad token (EOS is used when it has none)."""
    name, kwargs = resolve(spec)
    tok = _wrap(lambda: AutoTokenizer.from_pretrained(name, **kwargs), spec, "tokenizer")
    if tok.eos_token_id is None:
        raise ModelLoadError(f"tokenizer of {spec!r} has no EOS token; answers need a stop token")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(spec: str, dtype: str = "float32"):
    """Causal LM of a model spec, in ``dtype`` (``float32`` or ``bfloat16``)."""
    name, kwargs = resolve(spec)
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    return _wrap(
        lambda: AutoModelForCausalLM.from_pretrained(name, dtype=torch_dtype, **kwargs),
        spec, "model",
    )
