"""Reading user files as UTF-8, writing files and folders that a kill never leaves
half-written, and the local cache.

Every result halluc-cl writes goes through one of three routines:

- ``atomic_write`` (and ``atomic_write_bytes`` / ``atomic_write_text``): a file is written to
  a hidden temporary file beside it, flushed to disk (``fsync``), renamed over the old one
  (``os.replace``, atomic on POSIX and Windows) and the folder entry synced. A process killed
  at any moment, even by SIGKILL, leaves the old file or the new one. A killed writer's
  temporary file is removed by the next write of the same path.
- ``atomic_folder``: a folder (a saved model) is filled in a temporary folder and swapped in,
  the old one moved aside first and deleted after.
- ``locked_build``: a cached folder is built by one process at a time (a ``filelock`` lock,
  which works on every OS) and swapped in the same way.

A write that fails for a reason of the machine (a full disk, a quota) is a ``WriteError``
naming the file, and what was there before is kept.
"""

from __future__ import annotations

import codecs
import errno
import io
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

from filelock import FileLock

from halluc_cl.errors import DataError, HallucError, WriteError

# a full disk, a quota, a file-size limit: the machine's resources, not the input
RESOURCE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_RESOURCE_TEXTS = tuple(os.strerror(e) for e in sorted(RESOURCE_ERRNOS))
# torch.save's RuntimeError around a failed write (PyTorchStreamWriter)
_TORCH_WRITE_TEXTS = ("PytorchStreamWriter failed", "file write failed", "unexpected pos")


def cache_root() -> Path:
    """Root folder of everything halluc-cl caches (``$HALLUC_CL_CACHE`` or
    ``~/.cache/halluc-cl``)."""
    return Path(os.environ.get("HALLUC_CL_CACHE", Path.home() / ".cache" / "halluc-cl"))


def current_umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_failure(exc: BaseException) -> str | None:
    """Why a write failed, if ``exc`` is a failed write rather than a bug: an ``OSError``, or
    an error of torch or safetensors around one; ``None`` otherwise."""
    if isinstance(exc, HallucError):
        return None
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc)
        return f"{reason} (nothing earlier was written over)" if exc.errno in RESOURCE_ERRNOS \
            else reason
    text = " ".join(str(exc).split())
    if isinstance(exc, RuntimeError) and any(t in text for t in _TORCH_WRITE_TEXTS):
        reason = text.split("] . ", 1)[-1]  # drop torch's "[enforce fail at file:line]"
        return f"{reason} (is the disk full? nothing earlier was written over)"
    if any(t in text for t in _RESOURCE_TEXTS):
        return f"{text} (nothing earlier was written over)"
    return None


@contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Turn a failed write of ``path`` (``write_failure``) into a ``WriteError`` naming it."""
    try:
        yield
    except Exception as exc:
        reason = write_failure(exc)
        if reason is None:
            raise
        raise WriteError(f"cannot write {path}: {reason}") from None


def _remove_stale_temps(path: Path) -> None:
    """Temporary files of earlier writers of ``path`` that no longer run (killed mid-write)."""
    for temp in path.parent.glob(f".{path.name}.*.tmp"):
        pid = temp.name[len(path.name) + 2:].split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            temp.unlink(missing_ok=True)
        except OSError:  # alive, but another user's (or no signal 0 on this OS)
            pass


def _sync_folder(folder: Path) -> None:
    """fsync a folder, so that a rename in it survives a crash (a no-op where folders cannot
    be opened, as on Windows)."""
    with suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` through ``write(file)`` atomically and durably (module docstring).

    Args:
        path: The file; its folder is created.
        write: Writes the content to the binary file object it is given.

    Raises:
        WriteError: the write failed (a full disk, say); ``path`` is as it was and no
            temporary file is left.
    """
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.",
                                   suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; follow the umask
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    _sync_folder(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (``atomic_write``)."""
    atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically (``atomic_write``)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def share_modes(folder: Path) -> None:
    """Give a built folder and its files the umask's modes (mkdtemp makes 0700, and some
    writers make 0600 files), so a shared cache is readable by others."""
    mask = current_umask()
    os.chmod(folder, 0o777 & ~mask)
    for file in folder.iterdir():
        if file.is_file():
            os.chmod(file, 0o666 & ~mask)


def _swap_in(tmp: Path, dest: Path) -> None:
    """Rename the finished folder ``tmp`` to ``dest``; an existing ``dest`` is moved aside
    first and deleted after, so ``dest`` is never half-written or missing."""
    if dest.exists():
        trash = dest.with_name(tmp.name + ".old")
        os.replace(dest, trash)
        os.replace(tmp, dest)
        shutil.rmtree(trash)
    else:
        os.replace(tmp, dest)
    _sync_folder(dest.parent)


@contextmanager
def atomic_folder(dest: str | os.PathLike) -> Iterator[Path]:
    """A temporary folder beside ``dest`` to fill; on a clean exit it replaces ``dest``.

    On an error ``dest`` is as it was and the temporary folder is removed. Wrap it in
    ``writing(dest)`` where a failed write should be a ``WriteError`` naming ``dest``.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        yield tmp
        share_modes(tmp)
        _swap_in(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def locked_build(out: Path, done: str, build: Callable[[Path], None], force: bool = False) -> Path:
    """Return ``out``, building it first unless ``out/done`` exists (or ``force``).

    One builder at a time: the others wait on the lock and then find the finished folder.

    Args:
        out: The finished folder.
        done: A file ``build`` writes last; its presence marks a complete folder.
        build: Fills the temporary folder it is given.
        force: Build again and swap the new folder in.
    """
    if (out / done).is_file() and not force:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(out.parent / f".{out.name}.lock"):
        if (out / done).is_file() and not force:
            return out  # built by another process while we waited
        with atomic_folder(out) as tmp:
            build(tmp)
    return out


# Reading user-supplied text files (fact JSONL, EntityQuestions JSON, YAML configs) as UTF-8:
# a leading byte-order mark, as Windows editors write it, is dropped; a byte that is not UTF-8
# is an error naming the file, the line and the column, not a UnicodeDecodeError.

def decode_utf8(data: bytes, where: str | os.PathLike) -> str:
    """``data`` decoded as UTF-8, without a leading byte-order mark.

    Args:
        data: The file's bytes.
        where: The file, named in the error.

    Raises:
        DataError: a byte that is not UTF-8, with its line and column.
    """
    data = data.removeprefix(codecs.BOM_UTF8)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(not_utf8_message(where, data, exc.start)) from None


def not_utf8_message(where: str | os.PathLike, data: bytes, pos: int) -> str:
    """The error for the byte at ``pos`` of ``data``: file, line and column (1-based)."""
    line_start = data.rfind(b"\n", 0, pos) + 1
    line = data.count(b"\n", 0, pos) + 1
    return (f"{where}:{line}: not UTF-8 text (byte 0x{data[pos]:02x} at column "
            f"{pos - line_start + 1}); save the file as UTF-8")


def read_text(path: str | os.PathLike) -> str:
    """The text of a UTF-8 file (see ``decode_utf8``)."""
    path = Path(path)
    return decode_utf8(path.read_bytes(), path)


def text_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` of a UTF-8 file, numbered from 1.

    Lines end at ``\\n``, ``\\r\\n`` or ``\\r``, as in a file opened in text mode; a
    character such as U+2028 inside a JSON string does not end a line.
    """
    return enumerate(io.StringIO(read_text(path), newline=None), start=1)
