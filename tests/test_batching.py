"""Length-grouped micro-batches (train.batching): the same pairs, fewer padded positions."""

import numpy as np
import torch

from train.batching import length_grouped, text_lengths


def _batches(n_batches: int, size: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for b in range(n_batches):
        lengths = rng.integers(3, 40, size=(2, size))
        masks = [torch.tensor((np.arange(48)[None, :] < n[:, None]).astype(np.int64)) for n in lengths]
        ids = torch.arange(size) + b * size  # a row's identity, to follow it through the regrouping
        out.append({"query_key": ids, "positive_mask": masks[0], "negative_mask": masks[1],
                    "positive_ids": masks[0] * ids[:, None]})
    return out


def _padded_positions(batches: list[dict]) -> int:
    return sum(int(text_lengths(b).max()) * len(b["query_key"]) for b in batches)


def test_regrouping_keeps_every_pair_whole_and_pads_less():
    before = _batches(10, 16)
    after = list(length_grouped(before, window=4, rng=np.random.default_rng(1)))
    assert len(after) == len(before) and all(len(b["query_key"]) == 16 for b in after)
    # every pair appears once, and its columns travel together
    seen = torch.cat([b["query_key"] for b in after])
    assert sorted(seen.tolist()) == list(range(160))
    for b in after:
        assert torch.equal(b["positive_ids"], b["positive_mask"] * b["query_key"][:, None])
    # batches only mix pairs from their own window: the last window (2 batches) keeps rows 128-159
    windows = [set(b["query_key"].div(64, rounding_mode="floor").tolist()) for b in after]
    assert all(len(w) == 1 for w in windows)
    assert _padded_positions(after) < 0.85 * _padded_positions(before)


def test_regrouped_order_is_seeded():
    one = [b["query_key"].tolist() for b in length_grouped(_batches(8, 8), 4, np.random.default_rng(7))]
    two = [b["query_key"].tolist() for b in length_grouped(_batches(8, 8), 4, np.random.default_rng(7))]
    other = [b["query_key"].tolist() for b in length_grouped(_batches(8, 8), 4, np.random.default_rng(8))]
    assert one == two and one != other
