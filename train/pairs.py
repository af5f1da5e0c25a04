"""Training pairs from the prepared train split, tokenised by Ray Data.

Each row is one judged positive (relevance >= positive_at) with the query, the product's text and
at most one hard negative, chosen by ``hard_negatives``:

- ``judged``: a product judged irrelevant for the same query (relevance <= negative_at);
- ``mined``: a near-miss: a product the zero-shot index ranks between ``mine_skip`` and
  ``mine_depth`` for the query that is not judged above negative_at (known positives and partial
  matches are never used as negatives; the top ``mine_skip`` are skipped because unjudged products
  ranked that high are often relevant);
- ``both``: the judged negative where the query has one, else a mined one.

Negatives are cycled deterministically over a query's positives. Rows without a hard negative keep
a masked, empty one, so every batch has one shape. Each text also gets an int64 key (a hash), which
the loss uses to tell a real negative from another positive of the same query or a copy of the
query's own product.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from data_pipeline.events import read_log
from data_pipeline.index import ProductIndex
from data_pipeline.prepare import load_catalogue, load_split
from model.encoder import TextEncoder, prompted
from model.folders import read_prompts
from train.config import JUDGED_MODES
from train.event_pairs import click_pairs
from train.losses import TEXTS
from train.synthetic_pairs import load_synthetic

log = logging.getLogger(__name__)


def mine_near_misses(queries: list[str], index_dir: Path, known: dict, depth: int, skip: int) -> dict:
    """Per query, products the zero-shot index ranks in [skip, depth) that are not in ``known[query]``."""
    index = ProductIndex.load(Path(index_dir), use_gpu="no")
    encoder = TextEncoder.load(index.manifest["model"])
    log.info("[train] mining near-miss negatives for %d queries from %s", len(queries), index_dir)
    vectors = encoder.encode(queries, batch_size=256, progress="[train] mining near-misses", role="query")
    _, ids = index.search(vectors, depth)
    return {q: [p for p in row[skip:] if p is not None and p not in known.get(q, ())] for q, row in zip(queries, ids)}


def text_key(text: str) -> int:
    """A stable int64 id of a text (equal texts, equal keys; a collision is a 2^-64 event)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little", signed=True)


def build_pairs(prepared, cfg) -> pd.DataFrame:
    """The shuffled (query, positive, negative, has_negative, *_key) table the run trains on."""
    if getattr(cfg, "events", None):
        return event_pairs(prepared, cfg)[0]
    if getattr(cfg, "pairs", "judged") == "synthetic":
        return synthetic_training_pairs(prepared, cfg)[0]
    judgments = pd.concat([load_split(prepared, split) for split in cfg.data.split_names], ignore_index=True)
    judgments = cfg.data.budgeted(judgments, cfg.optim.seed)
    catalogue = load_catalogue(prepared)
    text = catalogue.set_index("product_id")["text"]
    judgments = judgments.groupby(["query", "product_id"], as_index=False)["relevance"].mean()
    groups = list(judgments.groupby("query", sort=True))
    not_negative = {q: set(g[g["relevance"] > cfg.negative_at]["product_id"]) for q, g in groups}
    mined = mine_near_misses([q for q, _ in groups], Path(cfg.mine_index_dir), not_negative, cfg.mine_depth,
                             cfg.mine_skip) if cfg.mines else {}
    rows = []
    for query, group in groups:
        negatives = group[group["relevance"] <= cfg.negative_at]["product_id"].tolist() \
            if cfg.hard_negatives in JUDGED_MODES else []
        negatives = negatives or mined.get(query, [])
        # A catalogue may list one title under several ids: a "negative" whose text equals a
        # relevant product's text would teach the model a contradiction.
        keep_out = {text[p] for p in not_negative[query]}
        negatives = [n for n in negatives if text[n] not in keep_out]
        positives = group[group["relevance"] >= cfg.data.positive_at]["product_id"].tolist()
        for i, pid in enumerate(positives):
            negative = text[negatives[i % len(negatives)]] if negatives else ""
            rows.append((query, text[pid], negative, bool(negatives)))
    return keyed(pd.DataFrame(rows, columns=["query", "positive", "negative", "has_negative"]), cfg)


def product_texts(prepared) -> pd.Series:
    """Each product's text by id (the first row of an id the catalogue lists twice)."""
    text = load_catalogue(prepared).set_index("product_id")["text"]
    return text[~text.index.duplicated()]


def event_pairs(prepared, cfg) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(pairs, validation judgments, summary) from the event log ``cfg.events`` (train/event_pairs.py):
    the catalogue gives the products' texts; no judgments file is read."""
    impressions, events = read_log(cfg.events)
    text = product_texts(prepared)
    pairs, val, summary = click_pairs(impressions, events, text, cfg.clicks, cfg.optim.seed,
                                      negatives=cfg.hard_negatives != "none")
    log.info("[train] from events: %s", summary)
    return keyed(pairs, cfg), val, summary


def synthetic_training_pairs(prepared, cfg) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(pairs, validation judgments) from `firstlight synthesize`'s folder: the catalogue gives the
    texts, each held-out pseudo-query is judged by its source product; no judgments file is read."""
    synthetic = load_synthetic(cfg.synthetic_dir)
    text = product_texts(prepared)
    synthetic = synthetic[synthetic["product_id"].isin(text.index)]
    train, val = synthetic[synthetic["split"] == "train"], synthetic[synthetic["split"] == "val"]
    use_negatives = cfg.hard_negatives != "none"
    has_negative = train["negative_id"].notna() & train["negative_id"].isin(text.index) & use_negatives
    pairs = pd.DataFrame({"query": train["query"].values, "positive": text[train["product_id"]].values,
                          "negative": [text[n] if ok else "" for n, ok in zip(train["negative_id"], has_negative)],
                          "has_negative": has_negative.values})
    judged = pd.DataFrame({"query": val["query"].values, "product_id": val["product_id"].values, "relevance": 3.0})
    log.info("[train] synthetic pairs: %d for training (%d with a hard negative), %d held-out queries",
             len(pairs), int(has_negative.sum()), val["query"].nunique())
    return keyed(pairs, cfg), judged


def keyed(pairs: pd.DataFrame, cfg) -> pd.DataFrame:
    for column in TEXTS:
        pairs[f"{column}_key"] = pairs[column].map(text_key).astype(np.int64)
    pairs = pairs.sample(frac=1.0, random_state=cfg.optim.seed).reset_index(drop=True)
    return pairs.head(cfg.data.max_pairs) if cfg.data.max_pairs else pairs


class Tokenize:
    """Ray Data callable class: fixed-length token ids for the three texts of each pair."""

    def __init__(self, model_path: str, query_max_length: int, product_max_length: int):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.prompts = read_prompts(model_path)
        self.query_max_length, self.product_max_length = query_max_length, product_max_length

    def __call__(self, batch: pa.Table) -> dict:
        out = {"has_negative": np.asarray(batch["has_negative"].to_numpy(zero_copy_only=False), dtype=bool)}
        for column in TEXTS:
            out[f"{column}_key"] = np.asarray(batch[f"{column}_key"].to_numpy(zero_copy_only=False), dtype=np.int64)
            role = "query" if column == "query" else "passage"
            length = self.query_max_length if role == "query" else self.product_max_length
            enc = self.tokenizer(prompted(batch[column].to_pylist(), self.prompts, role), padding="max_length",
                                 truncation=True, max_length=length, return_tensors="np")
            out[f"{column}_ids"] = enc["input_ids"].astype(np.int64)
            out[f"{column}_mask"] = enc["attention_mask"].astype(np.int64)
        return out


def tokenized_dataset(pairs: pd.DataFrame, model_path: str, cfg):
    return tokenize_on_ray(pairs, Tokenize, {"model_path": model_path, "query_max_length": cfg.query_max_length,
                                             "product_max_length": cfg.product_max_length}, 512, "pyarrow")


def tokenize_on_ray(frame: pd.DataFrame, tokenizer_class, kwargs: dict, batch_size: int, batch_format: str):
    """A Ray Dataset of ``frame`` tokenised by one actor of ``tokenizer_class`` (a quarter CPU: the
    tokeniser loads once and leaves the cores to training)."""
    import ray.data

    return ray.data.from_pandas(frame).map_batches(
        tokenizer_class, fn_constructor_kwargs=kwargs, batch_size=batch_size, batch_format=batch_format,
        compute=ray.data.ActorPoolStrategy(size=1), num_cpus=0.25)
