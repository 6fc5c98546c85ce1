"""Reading user-supplied text files (fact JSONL, EntityQuestions JSON, YAML configs) as UTF-8.

A leading byte-order mark, as Windows editors write it, is dropped. A byte that is not UTF-8
is an error naming the file, the line and the column, not a ``UnicodeDecodeError``::

    error: facts.jsonl:12: not UTF-8 text (byte 0xe9 at column 37); save the file as UTF-8
"""

from __future__ import annotations

import codecs
import io
import os
from collections.abc import Iterator
from pathlib import Path

from halluc_cl.errors import DataError


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
