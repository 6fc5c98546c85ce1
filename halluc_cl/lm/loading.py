"""Load a causal LM and its tokenizer from a model spec.

    model, tok = load_causal_lm("smollm2-135m-instruct"), load_tokenizer("smollm2-135m-instruct")

Specs: a local model folder (``halluc_cl.synthetic.resolve`` turns ``synthetic://<world>`` into
one), a ``.gguf`` file or ``gguf://<alias or file>`` (converted once into a cached safetensors
folder by gguf.py), a GGUF alias such as ``smollm2-135m-instruct``, or a Hugging Face hub id.
Weights are read from safetensors only, and remote code never runs unless ``trust_remote_code``
is set.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from halluc_cl.errors import ModelLoadError
from halluc_cl.lm.gguf import ALIASES, alias_path, convert_gguf

GGUF = "gguf://"


def _looks_like_path(spec: str) -> bool:
    # hub ids are "name" or "org/name"; anything else is meant as a path
    return spec.startswith((".", "/", "~")) or spec.count("/") > 1


def gguf_file(spec: str) -> Path | None:
    """The GGUF file a spec names (an alias, ``gguf://...`` or ``*.gguf``), else ``None``."""
    prefixed = spec.lower().startswith(GGUF)
    name = spec[len(GGUF):] if prefixed else spec
    if name.lower() in ALIASES:
        return alias_path(name)
    path = Path(name).expanduser()
    if path.suffix.lower() == ".gguf" or (prefixed and path.is_file()):
        return path
    if prefixed:
        raise ModelLoadError(f"{spec!r} names neither a GGUF file nor a known alias "
                             f"({', '.join(sorted(ALIASES))})")
    return None


def resolve(spec: str) -> tuple[str, dict]:
    """Return ``(name_or_path, extra from_pretrained kwargs)`` for a model spec.

    GGUF specs are converted here (once; later calls find the cached folder).
    """
    if spec.startswith("synthetic://"):
        raise ModelLoadError(f"{spec}: a synthetic preset; pass it through "
                             "halluc_cl.synthetic.resolve.resolve first (it builds the model)")
    gguf = gguf_file(spec)
    if gguf is not None:
        return str(convert_gguf(gguf)), {}
    path = Path(spec).expanduser()
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


def _hub_hint(spec: str, message: str) -> str:
    """What to do when a hub id is neither cached nor downloadable."""
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    if not offline and "connect" not in message:
        return ""
    why = "HF_HUB_OFFLINE=1" if offline else "the hub cannot be reached"
    return (f" ({why} and it is not in the local Hugging Face cache; download it once while "
            f"online with `hf download {spec}`, or pass a local model folder or a .gguf file, "
            f"e.g. {min(ALIASES)})")


def _wrap(fn, spec: str, what: str, name: str):
    try:
        return fn()
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = _hub_hint(spec, first) if name == spec else ""
        raise ModelLoadError(f"cannot load {what} {spec!r}{hint}: {first}") from None


def load_tokenizer(spec: str, trust_remote_code: bool = False):
    """Tokenizer of a model spec, with a pad token (EOS is used when it has none)."""
    name, kwargs = resolve(spec)
    tok = _wrap(lambda: AutoTokenizer.from_pretrained(
        name, trust_remote_code=trust_remote_code, **kwargs), spec, "tokenizer", name)
    if tok.eos_token_id is None:
        raise ModelLoadError(f"tokenizer of {spec!r} has no EOS token; answers need a stop token")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(spec: str, dtype: str = "float32", trust_remote_code: bool = False):
    """Causal LM of a model spec, in ``dtype`` (``float32`` or ``bfloat16``), from safetensors."""
    name, kwargs = resolve(spec)
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    return _wrap(
        lambda: AutoModelForCausalLM.from_pretrained(
            name, dtype=torch_dtype, use_safetensors=True, trust_remote_code=trust_remote_code,
            **kwargs),
        spec, "model", name,
    )
