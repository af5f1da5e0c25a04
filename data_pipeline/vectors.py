"""The embed stage's vectors on disk: Parquet rows of (product_id, embedding as a fixed-size list).

Kept apart from ``data_pipeline.embed`` so that readers of vectors (the index, evaluation, the
server's gateway) do not load torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def vectors_to_arrow(vectors: np.ndarray) -> pa.FixedSizeListArray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), vectors.shape[1])


def load_embeddings(folder: Path) -> tuple[list[str], np.ndarray]:
    """Read an embeddings folder back: (product ids, float32 matrix of unit rows)."""
    table = pq.read_table(Path(folder), columns=["product_id", "embedding"])
    column = table["embedding"].combine_chunks()
    dim = column.type.list_size
    vectors = np.asarray(column.values.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, dim)
    return table["product_id"].to_pylist(), vectors
