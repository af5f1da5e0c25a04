"""Validation nDCG@10 during training, on a fixed sample of val queries and catalogue.

Embedding the whole catalogue at every checkpoint would cost minutes on CPU, so validation ranks a
fixed catalogue sample (``val_products`` random products plus every product judged for the sampled
queries) for ``val_queries`` val queries. The figure tracks progress and picks the best checkpoint;
the full-catalogue test figure comes from `firstlight evaluate`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from data_pipeline.prepare import load_catalogue, load_split
from evaluation.metrics import Judged, evaluate_run, judged_from_frame
from model.encoder import TextEncoder


def sample_queries(judged: Judged, count: int, rng: np.random.Generator) -> list[str]:
    """The fixed sample of val queries a run validates on (the encoder's and the reranker's alike)."""
    if not judged.queries:
        return []
    return sorted(rng.choice(judged.queries, size=min(count, len(judged.queries)), replace=False).tolist())


class Validator:
    def __init__(self, cfg, tokenizer, prompts: dict | None = None, judged: dict | None = None):
        """``judged``: validation judgments as columns (query, product_id, relevance) instead of the
        val split's (a run on an event log judges by held-out clicks)."""
        rng = np.random.default_rng(cfg.optim.seed)
        judged = judged_from_frame(pd.DataFrame(judged) if judged is not None else load_split(cfg.prepared_dir, "val"))
        queries = sample_queries(judged, cfg.checkpoints.val_queries, rng)
        self.judged = Judged({q: judged.graded[q] for q in queries}, {q: judged.binary[q] for q in queries},
                             {q: judged.candidates[q] for q in queries})
        catalogue = load_catalogue(cfg.prepared_dir)
        wanted = {p for q in queries for p in judged.candidates[q]}
        sample = np.zeros(len(catalogue), dtype=bool)
        sample[rng.choice(len(catalogue), size=min(cfg.checkpoints.val_products, len(catalogue)), replace=False)] = True
        products = catalogue[sample | catalogue["product_id"].isin(wanted).to_numpy()]
        self.ids = products["product_id"].tolist()
        self.texts = products["text"].tolist()
        self.queries = queries
        self.tokenizer = tokenizer
        self.prompts = prompts or {}
        self.cfg = cfg

    @torch.no_grad()
    def __call__(self, engine) -> float:
        if not self.queries:
            return 0.0
        model = engine.module
        was_training = model.training
        encode = lambda texts, n, role: TextEncoder(  # noqa: E731
            model, self.tokenizer, max_length=n, device=engine.device, prompts=self.prompts).encode(
            texts, batch_size=128, role=role)
        products = encode(self.texts, self.cfg.product_max_length, "passage")
        queries = encode(self.queries, self.cfg.query_max_length, "query")
        model.train(was_training)
        scores = queries @ products.T
        top = np.argsort(-scores, axis=1)[:, :100]
        run = {q: {self.ids[j]: float(scores[i, j]) for j in row} for i, (q, row) in enumerate(zip(self.queries, top))}
        return evaluate_run(run, self.judged)["ndcg@10"]
