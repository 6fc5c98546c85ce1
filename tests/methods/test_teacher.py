"""The live teacher's weights go to a file beside the checkpoints, never into one
(``methods/teacher.py``): written once, read back on resume, checked by sha256."""

from __future__ import annotations

import shutil

import pytest
import torch

from halluc_cl.errors import ModelLoadError
from halluc_cl.methods.teacher import (
    TEACHER_FILE,
    AdapterOffTeacher,
    SnapshotTeacher,
    read_teacher,
    save_teacher,
)


def _teacher(seed: int) -> SnapshotTeacher:
    torch.manual_seed(seed)
    return SnapshotTeacher(torch.nn.Linear(4, 3))


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_saved_weights_read_back_from_the_recorded_path(tmp_path):
    teacher = _teacher(0)
    reference = save_teacher(teacher, tmp_path / "checkpoints", write=True)
    assert reference["file"] == str((tmp_path / "checkpoints" / TEACHER_FILE).resolve())
    assert len(reference["sha256"]) == 64
    assert _same(read_teacher(reference, None), teacher.state_dict())
    other = _teacher(1)  # a teacher with other weights takes the saved ones
    other.load_state_dict(read_teacher(reference, None))
    assert _same(other.state_dict(), teacher.state_dict())


def test_a_moved_run_folder_is_read_beside_the_checkpoint(tmp_path):
    teacher = _teacher(0)
    reference = save_teacher(teacher, tmp_path / "old", write=True)
    shutil.move(tmp_path / "old", tmp_path / "new")
    assert _same(read_teacher(reference, tmp_path / "new"), teacher.state_dict())


def test_missing_or_changed_weights_are_refused(tmp_path):
    reference = save_teacher(_teacher(0), tmp_path, write=True)
    torch.save(_teacher(1).state_dict(), tmp_path / TEACHER_FILE)
    with pytest.raises(ModelLoadError, match="sha256 differs"):
        read_teacher(reference, None)
    (tmp_path / TEACHER_FILE).unlink()
    with pytest.raises(ModelLoadError, match="is missing"):
        read_teacher(reference, tmp_path)


def test_other_processes_and_weightless_teachers_write_nothing(tmp_path):
    reference = save_teacher(_teacher(0), tmp_path, write=False)
    assert reference == {"file": str((tmp_path / TEACHER_FILE).resolve()), "sha256": None}
    assert not (tmp_path / TEACHER_FILE).exists()
    assert save_teacher(AdapterOffTeacher(torch.nn.Linear(2, 2)), tmp_path, write=True) is None
    assert list(tmp_path.iterdir()) == []
