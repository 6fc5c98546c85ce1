"""Right and left padding."""

import torch

from halluc_cl.facts.padding import left_pad, right_pad


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


def test_length_buckets_keep_every_row_and_cut_padding():
    import random

    from halluc_cl.facts.padding import length_bucketed

    rng = random.Random(0)
    rows = [{"input_ids": [0] * rng.randint(5, 40), "i": i} for i in range(96)]
    rng.shuffle(rows)
    out = length_bucketed(rows, batch_size=8, window=4, rng=random.Random(1))
    assert sorted(r["i"] for r in out) == list(range(96))

    def padding(order):
        return sum(8 * max(len(r["input_ids"]) for r in order[i:i + 8])
                   - sum(len(r["input_ids"]) for r in order[i:i + 8]) for i in range(0, 96, 8))

    assert padding(out) < 0.5 * padding(rows)
    # each batch comes from one window of 32 shuffled rows
    windows = {r["i"]: k // 32 for k, r in enumerate(rows)}
    assert all(len({windows[r["i"]] for r in out[i:i + 8]}) == 1 for i in range(0, 96, 8))
    assert length_bucketed(rows, 8, 1, random.Random(1)) == rows
    assert length_bucketed(rows, 8, 4, random.Random(1)) == out  # seeded
