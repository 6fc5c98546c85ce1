"""The local cache (``$HALLUC_CL_CACHE`` or ``~/.cache/halluc-cl``) and its folder builds:
one builder at a time (a file lock), built in a temporary folder and renamed into place, so a
reader never sees a half-built folder and a killed build leaves nothing behind."""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from halluc_cl.data.schema import current_umask


def cache_root() -> Path:
    """Root folder of everything halluc-cl caches."""
    return Path(os.environ.get("HALLUC_CL_CACHE", Path.home() / ".cache" / "halluc-cl"))


def share_modes(folder: Path) -> None:
    """Give a built folder and its files the umask's modes (mkdtemp makes 0700, and some
    writers make 0600 files), so a shared cache is readable by others."""
    mask = current_umask()
    os.chmod(folder, 0o777 & ~mask)
    for file in folder.iterdir():
        if file.is_file():
            os.chmod(file, 0o666 & ~mask)


def locked_build(out: Path, done: str, build: Callable[[Path], None], force: bool = False) -> Path:
    """Return ``out``, building it first unless ``out/done`` exists (or ``force``).

    Args:
        out: The finished folder.
        done: A file ``build`` writes last; its presence marks a complete folder.
        build: Fills the temporary folder it is given.
        force: Build again and swap the new folder in.
    """
    if (out / done).is_file() and not force:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (out / done).is_file() and not force:
            return out  # built by another process while we waited
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
        try:
            build(tmp)
            share_modes(tmp)
            swap_in(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def swap_in(tmp: Path, dest: Path) -> None:
    """Rename the finished folder ``tmp`` to ``dest``; an existing ``dest`` is moved aside
    first and deleted after, so ``dest`` is never half-written or missing."""
    if dest.exists():
        trash = dest.with_name(tmp.name + ".old")
        os.replace(dest, trash)
        os.replace(tmp, dest)
        shutil.rmtree(trash)
    else:
        os.replace(tmp, dest)
