"""Right and left padding."""

import torch

from halluc_cl.data.padding import left_pad, right_pad


def test_right_pad():
    ids, mask = right_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert ids.dtype == mask.dtype == torch.long


def test_left_pad_aligns_ends():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=-1)
    assert ids.tolist() == [[5, 6, 7], [-1, -1, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
