"""The int8 ONNX Runtime session of a model, without torch: where the exported file is cached and how
it runs. model/backends.py exports the file (that needs torch); this module only finds and runs it,
so a process without torch (the Retriever, encoding queries next to its search) can use it too.

The file is cached under ``FIRSTLIGHT_CACHE`` (default ``~/.cache/firstlight/onnx``), keyed as the
embed stage keys its vectors (``model_fingerprint``: the folder's path and its weight files' sizes
and modification times), so a retrained folder gets a new file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from model.folders import model_fingerprint


def cache_dir() -> Path:
    """$FIRSTLIGHT_CACHE/onnx, else ~/.cache/firstlight/onnx, else (a read-only home, as in some
    containers) the temporary directory."""
    if os.environ.get("FIRSTLIGHT_CACHE"):
        return Path(os.environ["FIRSTLIGHT_CACHE"]) / "onnx"
    home = Path.home() / ".cache" / "firstlight" / "onnx"
    try:
        home.mkdir(parents=True, exist_ok=True)
        return home
    except OSError:
        return Path(tempfile.gettempdir()) / "firstlight-onnx"


def int8_file(folder: str, kind: str) -> Path:
    """Where the int8 export of the model in ``folder`` is cached. ``kind``: "encoder" or "reranker"."""
    folder_path = Path(folder).resolve()
    stamp = json.dumps(model_fingerprint(str(folder_path)), sort_keys=True)  # the embed cache's key too
    key = hashlib.sha1(f"{kind}|{stamp}".encode()).hexdigest()[:16]
    return cache_dir() / f"{folder_path.name}-{kind}-{key}" / "model_qint8.onnx"


class OnnxInt8:
    """A transformer's forward pass in ONNX Runtime with int8 weights: feeds the tokenizer's numpy
    arrays, returns the first output (last hidden states for an encoder, logits for a reranker)."""

    def __init__(self, path: Path, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, int(threads))
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.path = path

    def __call__(self, batch: dict) -> np.ndarray:
        ids = np.asarray(batch["input_ids"], dtype=np.int64)
        feed = {k: np.asarray(batch[k], dtype=np.int64) if k in batch else np.zeros_like(ids) for k in self.inputs}
        return self.session.run(None, feed)[0]
