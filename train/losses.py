"""Contrastive losses over (query, product) pairs, in the sentence-transformers manner.

:class:`InfoNCELoss` is sentence-transformers' ``MultipleNegativesRankingLoss`` (and, with
``symmetric``, ``MultipleNegativesSymmetricRankingLoss``) over *every worker's* batch;
:class:`CachedInfoNCELoss` is its cached-gradient (GradCache) form, ``CachedMultipleNegativesRankingLoss``:
a batch far larger than memory allows, with the exact gradient of the whole batch.

In-batch negatives from all workers: each worker embeds its own micro-batch; ``gather_with_grad``
collects every worker's embeddings and puts the worker's own tensor (which carries the autograd
graph) back in its slot, so each worker computes the loss of the *global* batch. Summed over workers
(which data-parallel training does before averaging), the gradients are exactly those of the global
loss; the loss is multiplied by the world size to undo the averaging, so N workers with micro-batch
B train exactly like one process with batch N*B. Gradient accumulation does not add negatives;
``negatives_per_query`` reports how many each query saw.

A batch (``train.pairs``) holds token ids and masks per text (``query``, ``positive``, ``negative``),
an int64 key per text, and ``has_negative`` (rows without a hard negative keep a masked empty one).
A loss computes a loss: ``compute(engine, batch)`` embeds the batch's texts through the engine and
scores them. The backward pass and the optimizer step are the step strategy's (``train.steps``: plain,
or cached gradients for batches larger than memory).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from model.encoder import TextEncoder

TEXTS = ("query", "positive", "negative")


def world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from all workers along dim 0; only the local slice keeps its gradient."""
    rank, size = world()
    if size == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(size)]
    dist.all_gather(parts, x.detach().contiguous())
    parts[rank] = x
    return torch.cat(parts, dim=0)


def batch_scores(queries: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor | None = None,
                 negative_mask: torch.Tensor | None = None, keys: dict[str, torch.Tensor] | None = None,
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(cosines, valid): every global query against every global positive and hard negative.

    ``queries[i]`` matches ``positives[i]``. ``keys`` (int64 ids of the ``query``, ``positive`` and
    ``negative`` texts) removes false negatives: another positive of the same query, and any
    candidate whose text is the query's own positive (catalogues list one title under several ids).
    Without it a query that occurs twice in a batch is pushed away from its own relevant product;
    the bigger the global batch, the more often."""
    all_q = gather_with_grad(queries)
    candidates = [gather_with_grad(positives)]
    n = all_q.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=queries.device)
    valid = [torch.ones(n, n, dtype=torch.bool, device=queries.device)]
    if keys is not None:
        qk, pk = gather_with_grad(keys["query"]), gather_with_grad(keys["positive"])
        same = (qk.unsqueeze(1) == qk.unsqueeze(0)) | (pk.unsqueeze(1) == pk.unsqueeze(0))
        valid[0] = ~same | eye
    if negatives is not None:
        candidates.append(gather_with_grad(negatives))
        mask = negative_mask if negative_mask is not None else torch.ones(
            negatives.shape[0], dtype=torch.bool, device=queries.device)
        neg_valid = gather_with_grad(mask.to(torch.bool)).unsqueeze(0).expand(n, -1)
        if keys is not None:
            neg_valid = neg_valid & (gather_with_grad(keys["negative"]).unsqueeze(0) != pk.unsqueeze(1))
        valid.append(neg_valid)
    return all_q @ torch.cat(candidates, dim=0).T, torch.cat(valid, dim=1)


def info_nce(queries: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor | None = None,
             negative_mask: torch.Tensor | None = None, scale: float = 20.0,
             keys: dict[str, torch.Tensor] | None = None, symmetric: bool = False) -> tuple[torch.Tensor, float]:
    """InfoNCE of unit-norm embeddings over the global batch; (loss, negatives each query saw).

    ``scale`` is the inverse temperature (20 = 1/0.05, as sentence-transformers). ``symmetric``
    adds the other direction (each positive picks its query among the batch's queries) and
    averages the two. See :func:`batch_scores` for the candidates and ``keys``."""
    _, size = world()
    cosines, valid = batch_scores(queries, positives, negatives, negative_mask, keys)
    n = cosines.shape[0]
    logits = (scale * cosines).masked_fill(~valid, float("-inf"))
    labels = torch.arange(n, device=logits.device)
    loss = F.cross_entropy(logits.float(), labels)
    if symmetric:  # the positives block transposed: masked the same way, since `same` is symmetric
        loss = (loss + F.cross_entropy(logits[:, :n].T.float(), labels)) / 2
    return loss * size, float(valid.sum().item()) / n - 1


class InfoNCELoss(nn.Module):
    """InfoNCE with in-batch negatives from every worker plus one hard negative per pair.

    ``hard_negatives``: the batch's ``negative`` texts are encoded and scored (off: positives only).
    ``mask_duplicates``: false negatives found by the texts' keys leave each query's softmax."""

    def __init__(self, scale: float = 20.0, symmetric: bool = False, mask_duplicates: bool = True,
                 hard_negatives: bool = True):
        super().__init__()
        self.scale, self.symmetric = scale, symmetric
        self.mask_duplicates, self.hard_negatives = mask_duplicates, hard_negatives

    def texts(self) -> tuple[str, ...]:
        """The batch's texts a step embeds: the query, then the product texts."""
        return TEXTS if self.hard_negatives else TEXTS[:2]

    def forward(self, embedded: dict[str, torch.Tensor], batch: dict) -> tuple[torch.Tensor, dict]:
        """Loss of the embedded texts (name -> unit vectors) of ``batch``, and the figures to log."""
        device = embedded["query"].device
        keys = {k: batch[f"{k}_key"].to(device) for k in TEXTS} if self.mask_duplicates else None
        negatives = embedded.get("negative")
        mask = batch["has_negative"].to(device) if negatives is not None else None
        loss, seen = info_nce(embedded["query"], embedded["positive"], negatives, mask, self.scale, keys,
                              self.symmetric)
        return loss, {"negatives_per_query": seen}

    def compute(self, engine, batch: dict) -> tuple[torch.Tensor, dict]:
        """Embed and score one micro-batch: (loss, figures to log)."""
        names = self.texts()
        rows = len(batch["query_ids"])
        embedded = {"query": embed(engine, batch["query_ids"], batch["query_mask"])}
        # one forward pass for every product text: positives and hard negatives padded together
        products = embed(engine, torch.cat([batch[f"{n}_ids"] for n in names[1:]]),
                         torch.cat([batch[f"{n}_mask"] for n in names[1:]]))
        embedded.update(zip(names[1:], products.split(rows)))
        return self(embedded, batch)


def embed(engine, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unit vectors of a batch of texts through the training engine (mean-pooled, as served)."""
    out, mask = engine.forward(ids, mask)
    return TextEncoder.pool(out.last_hidden_state, mask)
