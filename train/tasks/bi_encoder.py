"""The bi-encoder task: the query / product encoder, trained contrastively on (query, positive,
hard negative) pairs with in-batch negatives (``train.losses``), validated by ranking a catalogue
sample (``train.validation``), exported as a sentence-transformers folder."""

from __future__ import annotations

import logging
from pathlib import Path

from model.export import export_sentence_transformer
from model.folders import read_prompts, resolve_model_path
from train.batching import length_grouped
from train.config import TrainConfig
from train.lora import add_adapters, merged
from train.losses import InfoNCELoss
from train.pairs import (
    build_pairs,
    event_pairs,
    synthetic_training_pairs,
    tokenized_dataset,
)
from train.steps import CachedStep, PlainStep
from train.validation import Validator

log = logging.getLogger(__name__)


class BiEncoderTask:
    name = "encoder"
    config_class = TrainConfig
    model_loader = "AutoModel"

    def data(self, cfg: TrainConfig, model_path: str):
        extra = {}
        if cfg.events:  # validation judges by the held-out queries' clicks, not by a judgments file
            pairs, val, summary = event_pairs(cfg.prepared_dir, cfg)
            extra = {"val_judgments": val.to_dict("list"), "events_summary": summary}
        elif cfg.pairs == "synthetic":  # validation by held-out pseudo-queries: no judgment read anywhere
            pairs, val = synthetic_training_pairs(cfg.prepared_dir, cfg)
            extra = {"val_judgments": val.to_dict("list")}
        else:
            pairs = build_pairs(cfg.prepared_dir, cfg)
        log.info("[train] %d pairs (%d with a hard negative)", len(pairs), int(pairs["has_negative"].sum()))
        return tokenized_dataset(pairs, model_path, cfg), len(pairs), extra

    def model(self, cfg: TrainConfig, model_path: str, attention: str | None):
        from transformers import AutoModel

        model = AutoModel.from_pretrained(model_path, attn_implementation=attention)
        if cfg.lora.rank:
            model = add_adapters(model, cfg.lora)
        return model.train(cfg.optim.dropout)  # from_pretrained hands back a model in eval mode: dropout off

    def stepper(self, cfg: TrainConfig):
        loss = InfoNCELoss(scale=cfg.scale, symmetric=cfg.symmetric_loss, mask_duplicates=cfg.mask_duplicates,
                           hard_negatives=cfg.hard_negatives != "none")
        return CachedStep(loss, cfg.grad_cache_chunk) if cfg.grad_cache_chunk else PlainStep(loss)

    def validator(self, cfg: TrainConfig, tokenizer, model_path: str, extra: dict):
        if not cfg.checkpoints.val_queries:
            return None
        return Validator(cfg, tokenizer, read_prompts(model_path), judged=extra.get("val_judgments"))

    def batches(self, cfg: TrainConfig, batches, rng):
        """Micro-batches regrouped by product-text length, so each pads less (``length_window``)."""
        return length_grouped(batches, cfg.length_window, rng) if cfg.length_window > 1 else batches

    def load_weights(self, cfg: TrainConfig, model, weights: dict):
        """``(model, missing, unexpected)``: a checkpoint's weights in ``model``, LoRA adapters merged in."""
        if cfg.lora.rank:
            return merged(model, weights, cfg.lora), [], []
        return (model, *model.load_state_dict(weights, strict=False))

    def examples_in(self, batch: dict) -> int:
        return len(batch["query_ids"])

    def export(self, cfg: TrainConfig, model, tokenizer, out: Path, state: dict) -> Path:
        return export_sentence_transformer(model, tokenizer, out, max_length=cfg.product_max_length,
                                           extra={"base_model": cfg.model, "step": state["step"],
                                                  "val_ndcg@10": state.get("best")},
                                           prompts=read_prompts(resolve_model_path(cfg.model)))
