"""Deterministic split of judgments by query, so every test query is unseen in training.

A query's split depends only on the seed and the query's normalised text (a hash), not on row order
or on which other queries exist: reruns, re-orderings and added data never move a query between
splits, and a query appears in exactly one split.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa

SPLITS = ("train", "val", "test")


def query_bucket(query: str, seed: int) -> float:
    """A uniform number in [0, 1) fixed by (seed, query)."""
    digest = hashlib.sha256(f"{seed}\x1f{query}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def split_of(query: str, seed: int, val_fraction: float, test_fraction: float) -> str:
    u = query_bucket(query, seed)
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


def assign_splits(batch: pa.Table, seed: int, val_fraction: float, test_fraction: float) -> pa.Table:
    """Add a ``split`` column to a judgments batch (Ray Data ``map_batches`` function)."""
    cache: dict[str, str] = {}
    splits = []
    for q in batch["query"].to_pylist():
        if q not in cache:
            cache[q] = split_of(q, seed, val_fraction, test_fraction)
        splits.append(cache[q])
    return batch.append_column("split", pa.array(splits, pa.string()))


def only_split(batch: pa.Table, split: str) -> pa.Table:
    mask = np.asarray(batch["split"].to_numpy(zero_copy_only=False) == split)
    return batch.filter(pa.array(mask)).drop_columns(["split"])


def query_set_sha256(queries) -> str:
    """Fingerprint of a split's distinct queries, recorded in the manifest to prove reruns agree."""
    h = hashlib.sha256()
    for q in sorted(set(queries)):
        h.update(q.encode("utf-8") + b"\n")
    return h.hexdigest()
