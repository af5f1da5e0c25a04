"""The reranker's training lists: per training query, a group of (product, relevance) mined from the
first stage the server runs, tokenised as (query, product text) pairs for Ray Train.

Labels: judged products keep their relevance (1-3); unjudged products from the first stage's ranks
``mine_skip``..``mine_depth`` count as irrelevant (1). The first stage's top unjudged products are
skipped: on Home Depot most of them are relevant but were never shown to the crowd (the densely
judged pool, shared/data/homedepot/judged_pool, grades three quarters of an encoder's top 10 as
relevant), and calling them irrelevant would teach the reranker to imitate the old search engine.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from data_pipeline.prepare import load_split
from ranking.offline import OfflineRanker
from train.pairs import tokenize_on_ray

log = logging.getLogger(__name__)
IRRELEVANT = 1.0


def mine_lists(cfg, ranker: OfflineRanker, split: str, queries: list[str] | None = None,
               judgments: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per query: query (as ranked: spelling-corrected), products, labels (lists).
    ``judgments``: (query, product_id, relevance) to use instead of the split's (judged from clicks)."""
    judgments = load_split(cfg.prepared_dir, split) if judgments is None else judgments
    if split == "train":
        judgments = cfg.data.budgeted(judgments, cfg.optim.seed)
    judged = judgments.groupby(["query", "product_id"], sort=True)["relevance"].mean()
    by_query: dict[str, dict] = {}
    for (query, pid), rel in judged.items():
        by_query.setdefault(query, {})[pid] = float(rel)
    wanted = sorted(by_query) if queries is None else queries
    texts, candidates = ranker.candidates(wanted, cfg.first_stage, cfg.mine_depth)
    rng = np.random.default_rng(cfg.optim.seed)
    rows = []
    for query, text, cands in zip(wanted, texts, candidates):
        labels = by_query.get(query, {})
        pool = [c["id"] for c in cands[cfg.mine_skip:] if c["id"] not in labels]
        judged_ids = list(labels)
        n_mined = min(len(pool), max(cfg.mined_per_group, cfg.group_size - len(judged_ids)))
        n_judged = min(len(judged_ids), cfg.group_size - n_mined)
        if n_judged == 0:
            continue
        picked = [judged_ids[i] for i in rng.permutation(len(judged_ids))[:n_judged]]
        mined = [pool[i] for i in rng.permutation(len(pool))[:n_mined]]
        ids = picked + mined
        rows.append({"query": text, "products": [ranker.hybrid.texts[p] for p in ids],
                     "labels": [labels[p] for p in picked] + [IRRELEVANT] * len(mined)})
    log.info("[train-reranker] %d %s lists of up to %d products (%d queries had no judged product)",
             len(rows), split, cfg.group_size, len(wanted) - len(rows))
    return pd.DataFrame(rows)


class TokenizeGroups:
    """Ray Data callable class: each query's group as fixed-size (group_size x pair_max_length) arrays;
    a group with fewer products is padded and masked (``valid``)."""

    def __init__(self, model_path: str, group_size: int, max_length: int):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.group_size, self.max_length = group_size, max_length

    def __call__(self, batch: pd.DataFrame) -> dict:
        g, n = self.group_size, len(batch)
        queries, products, valid = [], [], np.zeros((n, g), dtype=bool)
        labels = np.full((n, g), IRRELEVANT, dtype=np.float32)
        for i, (query, prods, labs) in enumerate(zip(batch["query"], batch["products"], batch["labels"])):
            prods, labs = list(prods)[:g], list(labs)[:g]
            valid[i, :len(prods)] = True
            labels[i, :len(labs)] = labs
            queries += [query] * g
            products += prods + [""] * (g - len(prods))
        enc = self.tokenizer(queries, products, padding="max_length", truncation="longest_first",
                             max_length=self.max_length, return_tensors="np")
        shape = (n, g, self.max_length)
        out = {"pair_ids": enc["input_ids"].astype(np.int64).reshape(shape),
               "pair_mask": enc["attention_mask"].astype(np.int64).reshape(shape),
               "labels": labels, "valid": valid}
        out["pair_types"] = enc["token_type_ids"].astype(np.int64).reshape(shape) if "token_type_ids" in enc \
            else np.zeros(shape, dtype=np.int64)
        return out


def tokenized_lists(lists: pd.DataFrame, model_path: str, cfg):
    return tokenize_on_ray(lists, TokenizeGroups, {"model_path": model_path, "group_size": cfg.group_size,
                                                   "max_length": cfg.pair_max_length}, 256, "pandas")
