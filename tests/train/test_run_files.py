"""The run folder's final model: a failed save (a full disk) names ``model/`` and leaves the
folder that was there, and no temporary folder."""

from __future__ import annotations

import errno
import re

import pytest

from halluc_cl.errors import WriteError
from halluc_cl.train.run_files import save_model_folder


class _Saves:
    """A model or tokenizer whose ``save_pretrained`` writes one file, or fails halfway."""

    def __init__(self, name: str, full: bool = False) -> None:
        self.name, self.full = name, full

    def save_pretrained(self, folder, **kwargs) -> None:
        (folder / self.name).write_text("half" if self.full else "whole")
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device", str(folder / self.name))


def test_full_disk_keeps_the_previous_model_folder(tmp_path):
    dest = tmp_path / "model"
    save_model_folder(_Saves("model.safetensors"), _Saves("tokenizer.json"), dest)
    with pytest.raises(WriteError, match=rf"^cannot write {re.escape(str(dest))}: No space "
                                         r"left on device \(nothing earlier was written over\)$"):
        save_model_folder(_Saves("model.safetensors", full=True), _Saves("tokenizer.json"),
                          dest)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert {p.name: p.read_text() for p in dest.iterdir()} == {
        "model.safetensors": "whole", "tokenizer.json": "whole"}
