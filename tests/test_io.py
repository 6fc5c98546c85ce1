"""halluc_cl.io: atomic, durable writes of files and folders, and locked cache builds."""

from __future__ import annotations

import os
import re
import stat
import threading
import time

import pytest

from halluc_cl.errors import WriteError
from halluc_cl.io import atomic_folder, atomic_write_bytes, atomic_write_text, locked_build


def _esc(path) -> str:
    return re.escape(str(path))


def test_atomic_write_leaves_no_temp_files(tmp_path):
    path = tmp_path / "deep" / "out.txt"
    atomic_write_text(path, "first")
    atomic_write_text(path, "second\n")
    assert path.read_text(encoding="utf-8") == "second\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.txt"]


def test_atomic_write_failure_cleans_up_and_keeps_old(tmp_path):
    path = tmp_path / "out.txt"
    atomic_write_text(path, "old")
    with pytest.raises(TypeError):
        atomic_write_bytes(path, "not bytes")  # write() of a binary file rejects str
    assert path.read_text(encoding="utf-8") == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_atomic_write_on_a_full_disk_names_the_file(tmp_path, full_disk):
    path = tmp_path / "facts.jsonl"
    atomic_write_text(path, "old")
    disk = full_disk("facts.jsonl")
    with pytest.raises(WriteError, match=rf"^cannot write {_esc(path)}: No space left on device "
                                         r"\(nothing earlier was written over\)$"):
        atomic_write_text(path, "new" * 10_000)
    assert len(disk.failed) == 1
    assert path.read_text(encoding="utf-8") == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["facts.jsonl"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_atomic_write_respects_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "out.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out.txt").stat().st_mode) == 0o644


def test_a_killed_writers_temp_file_is_removed_by_the_next_write(tmp_path):
    path = tmp_path / "out.txt"
    dead = tmp_path / ".out.txt.999999999.abc.tmp"  # no such pid
    alive = tmp_path / f".out.txt.{os.getppid()}.abc.tmp"  # a running process's
    dead.write_text("torn")
    alive.write_text("in progress")
    atomic_write_text(path, "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out.txt", alive.name])


def test_atomic_folder_replaces_the_old_folder_only_when_complete(tmp_path):
    dest = tmp_path / "model"
    with atomic_folder(dest) as tmp:
        (tmp / "weights").write_text("v1")
    with pytest.raises(RuntimeError, match="build failed"), atomic_folder(dest) as tmp:
        (tmp / "weights").write_text("v2")
        raise RuntimeError("build failed")
    assert (dest / "weights").read_text() == "v1"
    with atomic_folder(dest) as tmp:
        (tmp / "weights").write_text("v3")
    assert (dest / "weights").read_text() == "v3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_locked_build_builds_once_for_concurrent_callers(tmp_path):
    out, builds = tmp_path / "cache" / "base", []

    def build(folder):
        builds.append(folder)
        time.sleep(0.2)  # long enough for the other caller to find the lock held
        (folder / "done.json").write_text("{}")

    threads = [threading.Thread(target=locked_build, args=(out, "done.json", build))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(builds) == 1
    assert (out / "done.json").is_file()
    assert locked_build(out, "done.json", build) == out and len(builds) == 1
    locked_build(out, "done.json", build, force=True)
    assert len(builds) == 2
