"""The reranker task: a cross-encoder trained on groups of (query, product) pairs mined from the
first stage the server runs (``train.rerank_lists``), with a listwise or pointwise loss
(``train.rerank_losses``), validated by reranking val queries' candidates, exported as a
sentence-transformers CrossEncoder folder that records its pair length."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from data_pipeline.events import read_log
from data_pipeline.prepare import load_split
from evaluation.metrics import judged_from_frame
from model.reranker import export_reranker, new_reranker
from ranking.offline import OfflineRanker
from train.event_pairs import click_judgments
from train.rerank_config import RerankerConfig
from train.rerank_lists import mine_lists, tokenized_lists
from train.rerank_losses import RerankLoss, RerankValidator
from train.steps import PlainStep
from train.validation import sample_queries

log = logging.getLogger(__name__)


class RerankerTask:
    name = "reranker"
    config_class = RerankerConfig
    model_loader = "AutoModelForSequenceClassification"

    def data(self, cfg: RerankerConfig, model_path: str):
        """Tokenised query groups, mined from the first stage the server runs, and the validation lists."""
        ranker = OfflineRanker(cfg.prepared_dir, cfg.first_stage_index_dir, spell_correct=cfg.first_stage.spell_correct)
        train_frame = val_frame = None
        if cfg.events:  # judged from the log's clicks instead of a judgments file (train/event_pairs.py)
            impressions, events = read_log(cfg.events)
            train_frame, val_frame, summary = click_judgments(impressions, events, cfg.clicks)
            log.info("[train-reranker] judged from events: %s", summary)
        lists = mine_lists(cfg, ranker, "train", judgments=train_frame).sample(
            frac=1.0, random_state=cfg.optim.seed).reset_index(drop=True)
        if cfg.data.max_pairs:  # here: query groups
            lists = lists.head(cfg.data.max_pairs)
        extra = {"val_lists": [], "val_judged": None}
        if cfg.checkpoints.val_queries:
            judged = judged_from_frame(load_split(cfg.prepared_dir, "val") if val_frame is None else val_frame)
            queries = sample_queries(judged, cfg.checkpoints.val_queries, np.random.default_rng(cfg.optim.seed))
            texts, candidates = ranker.candidates(queries, cfg.first_stage, cfg.rerank_depth)
            extra["val_lists"] = [{"key": q, "query": t, "ids": [c["id"] for c in cands],
                                   "texts": [c["text"] for c in cands]}
                                  for q, t, cands in zip(queries, texts, candidates)]
            extra["val_judged"] = {name: {q: getattr(judged, name)[q] for q in queries}
                                   for name in ("graded", "binary", "candidates")}
        return tokenized_lists(lists, model_path, cfg), len(lists), extra

    def model(self, cfg: RerankerConfig, model_path: str, attention: str | None):
        return new_reranker(model_path, attn_implementation=attention).train(cfg.optim.dropout)

    def stepper(self, cfg: RerankerConfig):
        return PlainStep(RerankLoss(cfg.loss))

    def validator(self, cfg: RerankerConfig, tokenizer, model_path: str, extra: dict):
        if not cfg.checkpoints.val_queries:
            return None
        return RerankValidator(extra["val_lists"], extra["val_judged"], tokenizer, cfg.pair_max_length)

    def batches(self, cfg: RerankerConfig, batches, rng):
        return batches  # query groups are padded to one length already

    def load_weights(self, cfg: RerankerConfig, model, weights: dict):
        return (model, *model.load_state_dict(weights, strict=False))

    def examples_in(self, batch: dict) -> int:
        return int(batch["valid"].sum().item())

    def export(self, cfg: RerankerConfig, model, tokenizer, out: Path, state: dict) -> Path:
        return export_reranker(model, tokenizer, out, max_length=cfg.pair_max_length,
                               extra={"base_model": cfg.model, "step": state["step"], "loss": cfg.loss,
                                      "val_ndcg@10": state.get("best")})
