"""The reranker's losses over groups of (query, product) pairs, as sentence-transformers' CrossEncoder
losses define them, and its validation.

- ``listnet`` (listwise, ``ListNetLoss``): cross-entropy between the softmax of each group's scores
  and the softmax of its relevance labels. Labels enter as gains on the 0-3 grade scale that loss is
  usually given (``LISTNET_GAIN`` x (relevance - 1)): on FirstLight's 1-3 scale the raw softmax is so
  flat (a perfect ranking scores 1.85 against 2.08 for a random one in a group of 8) that training
  barely moved;
- ``bce`` (pointwise, ``BinaryCrossEntropyLoss``): each pair's logit against its relevance scaled
  to 0..1 ((relevance - 1) / 2 on the 1-3 scale).

Padded places in a group (a query with fewer products) are masked out of both.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from evaluation.metrics import Judged, evaluate_run

LISTNET_GAIN = 1.5  # relevance 1..3 -> gains 0..3
CHUNKS = 2  # pairs are scored in length-sorted chunks: a batch pads to its longest pair, twice the mean here


class RerankLoss(nn.Module):
    def __init__(self, kind: str = "listnet"):
        super().__init__()
        self.kind = kind

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        logits, labels = logits.float(), labels.float()
        if self.kind == "bce":
            targets = ((labels - 1.0) / 2.0).clamp(0.0, 1.0)
            return F.binary_cross_entropy_with_logits(logits[valid], targets[valid])
        scores = logits.masked_fill(~valid, -1e16)
        target = (LISTNET_GAIN * (labels - 1.0)).masked_fill(~valid, float("-inf")).softmax(dim=1)
        return -(target * scores.log_softmax(dim=1)).sum(dim=1).mean()

    def compute(self, engine, batch: dict) -> tuple[torch.Tensor, dict]:
        """Score one micro-batch of groups: (loss, figures to log)."""
        rows, group, length = batch["pair_ids"].shape
        flat = {k: batch[k].reshape(rows * group, length) for k in ("pair_ids", "pair_mask", "pair_types")}
        order = flat["pair_mask"].sum(dim=1).argsort()
        scored = torch.cat([score(engine, flat["pair_ids"][idx], flat["pair_mask"][idx], flat["pair_types"][idx])
                            for idx in order.chunk(CHUNKS)])
        logits = scored[order.argsort().to(scored.device)].view(rows, group)
        valid = batch["valid"].to(logits.device).bool()
        loss = self(logits, batch["labels"].to(logits.device), valid)
        return loss, {"pairs": int(valid.sum().item())}


def score(engine, ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
    """The cross-encoder's relevance logit per (query, product) pair, through the training engine."""
    out, _ = engine.forward(ids, mask, token_type_ids=types)
    return out.logits[:, 0]


class RerankValidator:
    """nDCG@10 (crowd labels) of a fixed sample of val queries' first-stage candidates, reranked."""

    def __init__(self, lists: list[dict], judged: dict, tokenizer, max_length: int):
        self.lists = lists  # [{query, ids, texts}] from the driver, mined like the training lists
        self.judged = Judged(**judged)
        self.tokenizer, self.max_length = tokenizer, max_length

    @torch.no_grad()
    def __call__(self, engine) -> float:
        if not self.lists:
            return 0.0
        model = engine.module
        was_training = model.training
        model.eval()
        run = {}
        for item in self.lists:
            enc = self.tokenizer([item["query"]] * len(item["texts"]), item["texts"], padding=True,
                                 truncation="longest_first", max_length=self.max_length, return_tensors="pt")
            logits = model(**{k: v.to(engine.device) for k, v in enc.items()}).logits[:, 0].float().cpu().numpy()
            run[item["key"]] = dict(zip(item["ids"], np.asarray(logits, dtype=float).tolist()))
        model.train(was_training)
        return evaluate_run(run, self.judged)["ndcg@10"]
