"""Training pairs from the prepared train split, tokenised by Ray Data.

Each row is one judged positive (relevance >= positive_at) with the query, the product's text and
hard negatives chosen by ``hard_negatives`` (at most one, or two with ``judged+mined``):

- ``judged``: a product judged irrelevant for the same query (relevance <= negative_at);
- ``mined``: a near-miss: a product ranked between ``mine_skip`` and ``mine_depth`` for the query
  that is not judged above negative_at (known positives and partial matches are never used as
  negatives; the top ``mine_skip`` are skipped because unjudged products ranked that high are often
  relevant). ``mine_from`` says what ranks the catalogue: the zero-shot index (products that mean
  nearly the same; ``mine_margin`` also drops any scored nearly as high as the query's best known
  positive) or BM25 (products sharing the query's words: the other sizes, models and brands that
  a dense encoder confuses with the one asked for);
- ``both``: the judged negative where the query has one, else a mined one;
- ``judged+mined``: both kinds at once, each where there is one: the judged negative in
  ``negative`` and a mined near-miss in a second column, ``negative2``. Every query then also sees
  the near-misses it is most easily confused with, not only what raters rejected; the product side
  encodes three texts per pair instead of two.

With ``distil_index_dir`` each row also carries a few unjudged products ranked high by BM25 fused
with that index's encoder, and the teacher's scores for them and for the positive (train.distil).

``query_typos`` gives that share of the rows' queries one typo (train.typos), keeping the clean
query's key.

``catalogue_pairs`` adds pseudo-queries made from the catalogue itself: a few words of a product's
title, in order, paired with that title (no hard negative). Judged queries cover a small part of a
catalogue; these pairs show the model the words (brands, sizes, model numbers) of every product,
including those no labelled query ever reached. They use titles only, never a judgment.

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

from data_pipeline.prepare import load_catalogue, load_split
from train.config import JUDGED_MODES
from train.distil import PRESENT, TEACHER, distil_columns, distil_row, fusion_teacher, row_candidates
from train.ensemble import PREFIX as TEACHER_ROW

log = logging.getLogger(__name__)


def mine_near_misses(queries: list[str], index_dir: Path, known: dict, depth: int, skip: int,
                     positives: dict | None = None, margin: float = 0.0) -> dict:
    """Per query, products the zero-shot index ranks in [skip, depth) that are not judged relevant.

    With ``margin`` > 0 a near-miss is kept only if its zero-shot score is below ``margin`` times the
    score of the query's most similar known positive: a product the model finds as close to the
    query as the best product judged relevant is more likely an unjudged relevant one than a negative.
    """
    from serve.index import ProductIndex
    from train.encoder import TextEncoder

    index = ProductIndex.load(Path(index_dir), use_gpu="no")
    encoder = TextEncoder.load(index.manifest["model"])
    log.info("[train] mining near-miss negatives for %d queries from %s", len(queries), index_dir)
    vectors = encoder.encode(queries, batch_size=256, progress="[train] mining near-misses")
    scores, ids = index.search(vectors, depth)
    ceilings = positive_ceilings(index, queries, vectors, positives or {}, margin)
    mined, dropped = {}, 0
    for q, row, row_scores, ceiling in zip(queries, ids, scores, ceilings):
        unjudged = [(p, s) for p, s in zip(row[skip:], row_scores[skip:])
                    if p is not None and p not in known.get(q, ())]
        mined[q] = [p for p, s in unjudged if s < ceiling]
        dropped += len(unjudged) - len(mined[q])
    if margin:
        log.info("[train] mine_margin %.2f dropped %d near-misses scored as close as a known positive",
                 margin, dropped)
    return mined


def mine_lexical_near_misses(queries: list[str], catalogue: pd.DataFrame, known: dict, depth: int,
                             skip: int) -> dict:
    """Per query, products BM25 ranks in [skip, depth) over the catalogue's texts that are not judged
    relevant."""
    from evaluation.bm25 import BM25Retriever

    log.info("[train] mining BM25 near-miss negatives for %d queries over %d products", len(queries),
             len(catalogue))
    bm25 = BM25Retriever(catalogue["product_id"].tolist(), catalogue["text"].tolist())
    mined = {}
    for q, hits in zip(queries, bm25.search(queries, depth)):
        ranked = sorted(hits, key=hits.get, reverse=True)
        mined[q] = [p for p in ranked[skip:] if p not in known.get(q, ())]
    return mined


def positive_ceilings(index, queries: list[str], vectors: np.ndarray, positives: dict,
                      margin: float) -> np.ndarray:
    """Per query, ``margin`` x the zero-shot score of its most similar known positive (inf where
    the margin is off or the query has no positive in the index)."""
    ceilings = np.full(len(queries), np.inf, dtype=np.float32)
    if not margin:
        return ceilings
    row_of = {pid: i for i, pid in enumerate(index.ids)}
    if hasattr(index.index, "make_direct_map"):  # an IVF index finds a stored vector by row only with it
        index.index.make_direct_map()
    for i, q in enumerate(queries):
        rows = [row_of[p] for p in positives.get(q, ()) if p in row_of]
        if rows:
            known = np.stack([index.index.reconstruct(r) for r in rows])
            ceilings[i] = margin * float((known @ vectors[i]).max())
    return ceilings


def text_key(text: str) -> int:
    """A stable int64 id of a text (equal texts, equal keys; a collision is a 2^-64 event)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little", signed=True)


def build_pairs(prepared, cfg) -> pd.DataFrame:
    judgments = pd.concat([load_split(prepared, split) for split in cfg.splits],
                          ignore_index=True)
    catalogue = load_catalogue(prepared)
    text = catalogue.set_index("product_id")["text"]
    judgments = judgments.groupby(["query", "product_id"], as_index=False)["relevance"].mean()
    groups = list(judgments.groupby("query", sort=True))
    positive_ids = {q: g[g["relevance"] >= cfg.positive_at]["product_id"].tolist() for q, g in groups}
    not_negative = {q: set(g[g["relevance"] > cfg.negative_at]["product_id"]) for q, g in groups}
    mined = {}
    if cfg.mines and cfg.mine_from == "bm25":
        mined = mine_lexical_near_misses([q for q, _ in groups], catalogue, not_negative,
                                         cfg.mine_depth, cfg.mine_skip)
    elif cfg.mines_index:
        mined = mine_near_misses([q for q, _ in groups], Path(cfg.mine_index_dir), not_negative,
                                 cfg.mine_depth, cfg.mine_skip, positive_ids, cfg.mine_margin)
    two = cfg.hard_negatives == "judged+mined"
    teacher, n_distil = {}, cfg.distil_candidates if cfg.distil_index_dir else 0
    if n_distil:
        teacher = fusion_teacher([q for q, _ in groups], Path(cfg.distil_index_dir), catalogue,
                                 cfg.distil_depth, cfg.distil_dense_weight)
    rows = []
    for query, group in groups:
        negatives = group[group["relevance"] <= cfg.negative_at]["product_id"].tolist() \
            if cfg.hard_negatives in JUDGED_MODES else []
        if not negatives and not two:
            negatives = mined.get(query, [])
        # A catalogue may list one title under several ids: a "negative" whose text equals a
        # relevant product's text would teach the model a contradiction.
        keep_out = {text[p] for p in not_negative[query]}
        negatives = [n for n in negatives if text[n] not in keep_out]
        # the second negative is never also the first: it would count twice among the candidates
        taken = keep_out | {text[j] for j in negatives}
        near = [n for n in mined.get(query, []) if text[n] not in taken] if two else []
        judged = set(group["product_id"]) if n_distil else set()  # what the teacher may not offer
        for i, pid in enumerate(positive_ids[query]):
            row = (query, text[pid], *_negative(negatives, i, text))
            row = row + _negative(near, i, text) if two else row
            if n_distil:
                row += distil_row(*row_candidates(teacher.get(query, []), judged, keep_out, text, n_distil, i,
                                                 cfg.distil_positive_margin),
                                  n_distil)
            rows.append(row)
    columns = ["query", "positive", "negative", "has_negative"] + (["negative2", "has_negative2"] if two else [])
    if n_distil:
        columns += [f"distil{j + 1}" for j in range(n_distil)] + [TEACHER, PRESENT]
    if cfg.catalogue_pairs:  # pseudo-queries have no teacher: their distillation columns are masked
        rows += [row + (("", False) if two else ()) + (distil_row([], [], n_distil) if n_distil else ())
                 for row in title_pseudo_queries(text, cfg.catalogue_pairs, cfg.seed)]
    pairs = pd.DataFrame(rows, columns=columns)
    for column in negative_columns(pairs.columns, ("query", "positive", "negative")):
        pairs[f"{column}_key"] = pairs[column].map(text_key).astype(np.int64)
    if cfg.ensemble_teacher:  # before the typos: the teacher encodes the clean query
        from train.ensemble import add_teacher_rows, parse_members

        pairs, q_matrix, p_matrix = add_teacher_rows(pairs, parse_members(cfg.ensemble_teacher, cfg.ensemble_weights),
                                                     catalogue, negative_columns(pairs.columns, ("positive", "negative")))
        pairs.attrs["teacher"] = (q_matrix, p_matrix)  # pandas keeps attrs through the shuffle below
    if cfg.query_typos:
        # after the keys: a misspelt query keeps its clean query's key, so the loss still knows the
        # query's other positives are not its negatives
        pairs["query"] = with_typos(pairs["query"], cfg.query_typos, cfg.seed)
    pairs = pairs.sample(frac=1.0, random_state=cfg.seed).reset_index(drop=True)
    return pairs.head(cfg.max_pairs) if cfg.max_pairs else pairs


def _negative(candidates: list, i: int, text) -> tuple[str, bool]:
    """(text, present) of the i-th positive's negative, cycling over the query's candidates."""
    return (text[candidates[i % len(candidates)]], True) if candidates else ("", False)


def negative_columns(columns, base=("negative",)) -> list[str]:
    """``base`` plus the second hard-negative column where the pairs have one (judged+mined).

    ``columns``: a pairs table's column names or a tokenised batch's keys; both carry
    ``has_negative2`` exactly when there is a second negative."""
    return [*base, "negative2"] if "has_negative2" in columns else list(base)


def with_typos(queries: pd.Series, share: float, seed: int) -> pd.Series:
    """``queries`` with one typo in a ``share`` of them (chosen by ``seed``; see train.typos)."""
    from train.typos import add_typo

    rng = np.random.default_rng([seed, 1])
    hit = rng.random(len(queries)) < share
    out = queries.copy()
    out[hit] = [add_typo(q, rng) for q in queries[hit]]
    log.info("[train] %d of %d training queries get a typo", int((out != queries).sum()), len(queries))
    return out


# words that say nothing alone; a query made only of them would teach noise
_FILLER = {"in.", "in", "x", "and", "with", "for", "the", "of", "a", "to", "ft.", "per", "or", "on", "by"}


def title_pseudo_queries(text: pd.Series, n: int, seed: int) -> list[tuple]:
    """``n`` (query, title, "", False) rows: 2-5 words of a sampled title, kept in title order."""
    rng = np.random.default_rng(seed)
    titles = text.drop_duplicates().to_numpy()
    rows = []
    for title in rng.choice(titles, size=min(n, len(titles)), replace=False):
        words = [w.strip("(),") for w in str(title).split()[:20]]
        words = [w for w in words if any(c.isalnum() for c in w) and w.lower() not in _FILLER]
        if len(words) < 3:
            continue
        k = int(rng.integers(2, min(5, len(words) - 1) + 1))
        picked = np.sort(rng.choice(len(words), size=k, replace=False))
        rows.append((" ".join(words[i] for i in picked), title, "", False))
    return rows


class Tokenize:
    """Ray Data callable class: fixed-length token ids for the texts of each pair (three, or four
    with a second hard negative)."""

    def __init__(self, model_path: str, query_max_length: int, product_max_length: int):
        from transformers import AutoTokenizer

        from data_pipeline.text import normalize_text

        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.normalize = normalize_text
        self.query_max_length, self.product_max_length = query_max_length, product_max_length

    def __call__(self, batch: pa.Table) -> dict:
        texts = negative_columns(batch.column_names, ("query", "positive", "negative"))
        out = {}
        for column in negative_columns(batch.column_names):
            out[f"has_{column}"] = np.asarray(batch[f"has_{column}"].to_numpy(zero_copy_only=False), dtype=bool)
        for column in texts:
            out[f"{column}_key"] = np.asarray(batch[f"{column}_key"].to_numpy(zero_copy_only=False), dtype=np.int64)
        for column in batch.column_names:
            if column.startswith(TEACHER_ROW):  # rows of the ensemble teacher's matrices (train.ensemble)
                out[column] = np.asarray(batch[column].to_numpy(zero_copy_only=False), dtype=np.int64)
        if PRESENT in batch.column_names:
            out[PRESENT] = np.asarray(batch[PRESENT].to_numpy(zero_copy_only=False), dtype=bool)
            out[TEACHER] = np.asarray(batch[TEACHER].to_pylist(), dtype=np.float32)
        texts += distil_columns(batch.column_names)  # texts the loss scores, with no key of their own
        for column in texts:
            length = self.query_max_length if column == "query" else self.product_max_length
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
