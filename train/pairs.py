"""Training pairs from the prepared train split, tokenised by Ray Data.

Each row is one judged positive (relevance >= positive_at): the query, the product's text and, when
``hard_negatives`` is ``judged``, a product judged irrelevant for the same query (relevance <=
negative_at), cycled deterministically over the query's positives. Rows without a hard negative keep
a masked, empty one, so every batch has one shape.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from data_pipeline.prepare import load_catalogue, load_split


def build_pairs(prepared, cfg) -> pd.DataFrame:
    judgments = load_split(prepared, "train")
    text = load_catalogue(prepared).set_index("product_id")["text"]
    judgments = judgments.groupby(["query", "product_id"], as_index=False)["relevance"].mean()
    rows = []
    for query, group in judgments.groupby("query", sort=True):
        positives = group[group["relevance"] >= cfg.positive_at]["product_id"].tolist()
        negatives = group[group["relevance"] <= cfg.negative_at]["product_id"].tolist() \
            if cfg.hard_negatives == "judged" else []
        for i, pid in enumerate(positives):
            neg = negatives[i % len(negatives)] if negatives else None
            rows.append((query, text[pid], text[neg] if neg else "", neg is not None))
    pairs = pd.DataFrame(rows, columns=["query", "positive", "negative", "has_negative"])
    return pairs.sample(frac=1.0, random_state=cfg.seed).reset_index(drop=True)


class Tokenize:
    """Ray Data callable class: fixed-length token ids for the three texts of each pair."""

    def __init__(self, model_path: str, query_max_length: int, product_max_length: int):
        from transformers import AutoTokenizer

        from data_pipeline.text import normalize_text

        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.normalize = normalize_text
        self.lengths = {"query": query_max_length, "positive": product_max_length, "negative": product_max_length}

    def __call__(self, batch: pa.Table) -> dict:
        out = {"has_negative": np.asarray(batch["has_negative"].to_numpy(zero_copy_only=False), dtype=bool)}
        for column, length in self.lengths.items():
            enc = self.tokenizer([self.normalize(t) for t in batch[column].to_pylist()], padding="max_length",
                                 truncation=True, max_length=length, return_tensors="np")
            out[f"{column}_ids"] = enc["input_ids"].astype(np.int64)
            out[f"{column}_mask"] = enc["attention_mask"].astype(np.int64)
        return out


def tokenized_dataset(pairs: pd.DataFrame, model_path: str, cfg):
    import ray.data

    return ray.data.from_pandas(pairs).map_batches(
        Tokenize, fn_constructor_kwargs={"model_path": model_path, "query_max_length": cfg.query_max_length,
                                         "product_max_length": cfg.product_max_length},
        batch_size=512, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=1), num_cpus=0.25)
