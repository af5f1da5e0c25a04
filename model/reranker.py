"""The cross-encoder reranker: one transformer reads (visitor text, product text) together and
scores how well the product answers it; the second stage after the hybrid first stage.

A reranker folder is a Hugging Face sequence-classification folder with one output (a relevance
logit): ``sentence_transformers.CrossEncoder(path)`` loads it unchanged and gives the same scores
(its ``predict`` passes them through a sigmoid by default, which keeps the order). FirstLight's
training (`firstlight train-reranker`) writes such folders; ``firstlight.json`` inside records how.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from common.errors import ConfigError
from common.manifest import atomic_folder, write_json
from common.text import normalize_text
from model.backends import load_int8, resolve_backend
from model.encoder import pick_device
from model.folders import resolve_model_path


class Reranker:
    """Relevance logits for (query, product text) pairs."""

    def __init__(self, model, tokenizer, *, max_length: int = 128, name: str = "", device="cpu",
                 backend: str = "fp32", runner=None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.name = name
        self.device = torch.device(device)
        self.backend = backend  # fp32, bf16 or int8 (model/backends.py); int8 runs ``runner``
        self.runner = runner

    @classmethod
    def load(cls, model: str, *, max_length: int | None = None, device: str = "auto",
             backend: str = "auto") -> "Reranker":
        """``backend``: fp32, bf16, int8 or auto (model/backends.py); ``max_length`` None: the length the
        folder was trained with (its ``firstlight.json``), else 128."""
        from transformers import (
            AutoConfig,
            AutoModelForSequenceClassification,
            AutoTokenizer,
        )

        if max_length is None:
            max_length = trained_max_length(resolve_model_path(model)) or 128
        if max_length < 2:
            raise ConfigError("max_length", f"{max_length} tokens cannot hold a query and a product",
                              "use e.g. 64-256")
        path = resolve_model_path(model)
        if not (Path(path) / "config.json").exists():
            raise ConfigError("reranker", f"{model} is not a model folder (no config.json)",
                              "pass the model folder `firstlight train-reranker` wrote (OUTPUT/model)")
        if getattr(AutoConfig.from_pretrained(path), "num_labels", None) != 1:
            raise ConfigError("reranker", f"{model} is not a one-score cross-encoder (num_labels != 1)",
                              "pass a folder written by `firstlight train-reranker`")
        dev = pick_device(device)
        backend = resolve_backend(backend, dev)
        net = AutoModelForSequenceClassification.from_pretrained(path)
        runner = load_int8(net, path, "reranker") if backend == "int8" else None
        net = net.to(dev, dtype=torch.bfloat16 if backend == "bf16" else torch.float32)
        return cls(net, AutoTokenizer.from_pretrained(path), max_length=max_length, name=str(model), device=dev,
                   backend=backend, runner=runner)

    def tokenize(self, queries: list[str], texts: list[str]) -> dict:
        return self.tokenizer([normalize_text(q) for q in queries], [normalize_text(t) for t in texts],
                              padding=True, truncation="longest_first", max_length=self.max_length,
                              return_tensors="pt")

    @torch.inference_mode()
    def score_pairs(self, queries: list[str], texts: list[str], batch_size: int = 64) -> np.ndarray:
        """One logit per (query, text) pair; higher is more relevant."""
        out = []
        for start in range(0, len(texts), batch_size):
            batch = self.tokenize(queries[start:start + batch_size], texts[start:start + batch_size])
            if self.runner is not None:  # int8: ONNX Runtime on the CPU
                out.append(self.runner({k: v.numpy() for k, v in batch.items()})[:, 0].astype(np.float32))
                continue
            logits = self.model(**{k: v.to(self.device) for k, v in batch.items()}).logits
            out.append(logits[:, 0].float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)

    def score(self, query: str, texts: list[str], batch_size: int = 64) -> np.ndarray:
        return self.score_pairs([query] * len(texts), texts, batch_size)


def trained_max_length(path) -> int | None:
    """The pair length a FirstLight-trained reranker folder records (``firstlight.json``), or None."""
    import json

    try:
        return int(json.loads((Path(path) / "firstlight.json").read_text())["max_length"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def new_reranker(model: str, attn_implementation: str | None = None):
    """A cross-encoder to train, from an encoder's weights (a one-logit head on top, initialised fresh;
    a reranker folder continues with its own head)."""
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(resolve_model_path(model), num_labels=1,
                                                              attn_implementation=attn_implementation)


def export_reranker(model, tokenizer, folder: Path, max_length: int, extra: dict | None = None) -> Path:
    """Write a CrossEncoder-loadable folder atomically (a crash leaves the old folder or none)."""
    with atomic_folder(Path(folder)) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "firstlight.json", {"kind": "reranker", "max_length": int(max_length), **(extra or {})})
    return Path(folder)
