"""The embed stage's encoder actor where the int8 backend runs on a CPU: model/onnx_text.py's
torch-free encoder. This module imports neither torch nor transformers, so an actor starts in about
a second instead of the several it takes to import them and load the PyTorch weights; on a
catalogue of a few thousand products that start-up was a large share of the run. The vectors are
those of TextEncoder's int8 backend (tests/test_onnx_text.py).
"""

from __future__ import annotations

import pyarrow as pa

from data_pipeline.vectors import vectors_to_arrow
from model.onnx_text import OnnxTextEncoder


class OnnxEncoderActor:
    """Ray Data callable class: one int8 ONNX session per actor, reused for every batch."""

    def __init__(self, model: str, max_length: int, threads: int):
        self.encoder = OnnxTextEncoder(model, max_length, threads=max(1, threads), role="passage")

    def __call__(self, batch: pa.Table) -> pa.Table:
        vectors = self.encoder.encode(batch["text"].to_pylist(), batch_size=64)
        return pa.table({"product_id": batch["product_id"], "embedding": vectors_to_arrow(vectors)})
