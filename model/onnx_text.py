"""Texts encoded without torch: the same int8 ONNX file model/encoder.py runs for the int8 backend
(model/onnx_int8.py), fed by the `tokenizers` package and pooled in numpy as model/encoder.py pools
(mean over real tokens, then L2 normalisation). The vectors equal TextEncoder's int8 ones.

- The Retriever encodes shoppers' queries with it, in the same call as their search: one Ray hop
  and one batch wait fewer than going through the Encoder deployment first, which on a CPU was most
  of FirstLight's overhead over a single process.
- The embed stage's actors encode products with it: an actor starts without importing torch or
  loading the PyTorch weights, which on a small catalogue was a large share of the run.

It needs a plain (not ensemble) model folder with a fast-tokenizer file (``tokenizer.json``);
:func:`unsupported` says why a model does not qualify, and the caller then uses TextEncoder. The
int8 file is exported in a child process when the cache lacks it, so torch never loads here.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np

from common.errors import FirstLightError
from common.text import normalize_text
from model.folders import is_ensemble, read_prompts, resolve_model_path
from model.onnx_int8 import OnnxInt8, int8_file

log = logging.getLogger(__name__)


def unsupported(model: str) -> str | None:
    """Why ``model`` cannot be encoded here (None: it can)."""
    folder = Path(resolve_model_path(model))
    if is_ensemble(folder):
        return "an ensemble of encoders"
    if not (folder / "tokenizer.json").is_file():
        return f"no fast-tokenizer file ({folder.name}/tokenizer.json)"
    return None


class OnnxTextEncoder:
    def __init__(self, model: str, max_length: int, threads: int = 1, role: str = "query"):
        from tokenizers import Tokenizer

        reason = unsupported(model)
        if reason:
            raise FirstLightError(f"{model} cannot be encoded without torch: {reason}")
        folder = resolve_model_path(model)
        target = int8_file(folder, "encoder")
        if not target.exists():  # torch stays out of this process: the export runs in a child
            log.info("exporting %s to ONNX int8 (once; cached)", Path(folder).name)
            subprocess.run([sys.executable, "-m", "model.backends", folder, "encoder"], check=True,
                           capture_output=True, text=True)
        self.runner = OnnxInt8(target, threads)
        self.tokenizer = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length)
        pad = _pad_token(Path(folder))
        self.tokenizer.enable_padding(pad_id=self.tokenizer.token_to_id(pad) or 0, pad_token=pad)
        self.prefix = read_prompts(folder).get(role, "")  # role: "query" (shopper text) or "passage" (a product)

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Unit vectors (float32 rows), in input order, as TextEncoder.encode(role=role) gives: texts
        go in batches of similar length, as there (less padding)."""
        if len(texts) <= batch_size:
            return self._encode(texts)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        parts = [(order[i:i + batch_size], self._encode([texts[j] for j in order[i:i + batch_size]]))
                 for i in range(0, len(texts), batch_size)]
        out = np.empty((len(texts), parts[0][1].shape[1]), dtype=np.float32)
        for idx, vectors in parts:
            out[idx] = vectors
        return out

    def _encode(self, texts: list[str]) -> np.ndarray:
        encoded = self.tokenizer.encode_batch([self.prefix + normalize_text(t) for t in texts])
        mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
        states = self.runner({"input_ids": np.array([e.ids for e in encoded], dtype=np.int64), "attention_mask": mask,
                              "token_type_ids": np.array([e.type_ids for e in encoded], dtype=np.int64)})
        weights = mask[:, :, None].astype(np.float32)
        mean = (states.astype(np.float32) * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return (mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def _pad_token(folder: Path) -> str:
    try:
        token = json.loads((folder / "tokenizer_config.json").read_text()).get("pad_token")
    except (OSError, ValueError):
        token = None
    if isinstance(token, dict):  # older files keep it as an AddedToken mapping
        token = token.get("content")
    return token or "[PAD]"
