"""Right and left padding."""

import torch

from halluc_cl.data.padding import left_pad, right_pad


def test_right_pad():
    ids, mask = right_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert ids.dtype == mask.dtype == torch.long


def test_left_pad_shapes_and_masks():
    ids, mask = left_pad([[5, 6, 7], [8], [9, 10]], pad_id=0)
    assert ids.dtype == torch.long and mask.dtype == torch.long
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8], [0, 9, 10]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 1, 1]]


def test_left_pad_uses_given_pad_id_and_equal_lengths():
    ids, mask = left_pad([[1, 2], [3]], pad_id=42)
    assert ids.tolist() == [[1, 2], [42, 3]]
    ids, mask = left_pad([[1, 2], [3, 4]], pad_id=0)
    assert ids.shape == (2, 2) and mask.tolist() == [[1, 1], [1, 1]]
