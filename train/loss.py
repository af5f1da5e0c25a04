"""Contrastive InfoNCE over (query, product) pairs with in-batch negatives from every worker.

Each worker embeds its own micro-batch. ``gather_with_grad`` collects every worker's embeddings and
puts the worker's own tensor (which carries the autograd graph) back in its slot, so each worker
computes the loss of the *global* batch: every query is scored against the positives and hard
negatives of all workers. Gradients reach each worker's own embeddings from all of the global loss
terms; summed over workers (which data-parallel training does before averaging), that is the exact
gradient of the global loss. The loss is multiplied by the world size to undo the averaging, so N
workers with micro-batch B train exactly like one process with batch N*B.

Gradient accumulation does not add negatives: a step of ``k`` accumulated micro-batches still scores
each query against ``world * B`` positives (+ as many hard negatives); ``negatives_per_query`` reports
that number.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F


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


class Scores(NamedTuple):
    """What InfoNCE scores each query of the global batch against: its cosines to every candidate
    (global queries x [global positives, global hard negatives]) and which of them count (False: a
    masked hard negative, or a false negative found by ``keys``). Computed once a step and shared by
    every loss term that ranks the same candidates."""
    cosines: torch.Tensor
    valid: torch.Tensor


def batch_scores(queries: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor | None = None,
                 negative_mask: torch.Tensor | None = None, keys: dict[str, torch.Tensor] | None = None) -> Scores:
    """Gather every worker's embeddings (the local slice keeps its gradient) and score them.

    ``queries[i]`` matches ``positives[i]``; every other positive and every (unmasked) hard negative
    in the global batch is a candidate for it. ``keys`` (int64 ids of the ``query``, ``positive`` and
    ``negative`` texts) removes false negatives: another positive of the same query, and any candidate
    whose text is the query's own positive (catalogues list one title under several ids). Without it
    a query that occurs twice in a batch is pushed away from its own relevant product; the bigger the
    global batch, the more often."""
    all_q = gather_with_grad(queries)
    candidates = [gather_with_grad(positives)]
    n = all_q.shape[0]
    valid = [torch.ones(n, n, dtype=torch.bool, device=queries.device)]
    if keys is not None:
        qk, pk = gather_with_grad(keys["query"]), gather_with_grad(keys["positive"])
        same = (qk.unsqueeze(1) == qk.unsqueeze(0)) | (pk.unsqueeze(1) == pk.unsqueeze(0))
        valid[0] = ~same | torch.eye(n, dtype=torch.bool, device=queries.device)
    if negatives is not None:
        candidates.append(gather_with_grad(negatives))
        mask = negative_mask if negative_mask is not None else torch.ones(
            negatives.shape[0], dtype=torch.bool, device=queries.device)
        neg_valid = gather_with_grad(mask.to(torch.bool)).unsqueeze(0).expand(n, -1)
        if keys is not None:
            neg_valid = neg_valid & (gather_with_grad(keys["negative"]).unsqueeze(0) != pk.unsqueeze(1))
        valid.append(neg_valid)
    return Scores(all_q @ torch.cat(candidates, dim=0).T, torch.cat(valid, dim=1))


def info_nce(queries: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor | None = None,
             negative_mask: torch.Tensor | None = None, scale: float = 20.0,
             keys: dict[str, torch.Tensor] | None = None, symmetric: bool = False) -> tuple[torch.Tensor, float]:
    """InfoNCE of unit-norm embeddings; returns (loss, negatives each query saw, on average).
    See :func:`batch_scores` for the candidates and ``keys``, :func:`contrastive` for the rest."""
    return contrastive(batch_scores(queries, positives, negatives, negative_mask, keys), scale, symmetric)


def contrastive(scores: Scores, scale: float = 20.0, symmetric: bool = False) -> tuple[torch.Tensor, float]:
    """InfoNCE over ``scores``: each query picks its own positive (column i of the positives' block).

    ``scale`` is the inverse temperature (20 = 1/0.05, as sentence-transformers'
    MultipleNegativesRankingLoss). ``symmetric`` adds the other direction (each positive product picks
    its query among the batch's queries, as MultipleNegativesSymmetricRankingLoss) and averages the two."""
    _, size = world()
    n = scores.cosines.shape[0]
    logits = (scale * scores.cosines).masked_fill(~scores.valid, float("-inf"))
    labels = torch.arange(n, device=logits.device)
    loss = F.cross_entropy(logits.float(), labels)
    if symmetric:  # the positives block transposed: masked the same way, since `same` is symmetric
        loss = (loss + F.cross_entropy(logits[:, :n].T.float(), labels)) / 2
    return loss * size, float(scores.valid.sum().item()) / n - 1


def ensemble_kl(queries: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor | None,
                negative_mask: torch.Tensor | None, teacher: dict[str, torch.Tensor], scale: float = 20.0,
                temperature: float = 0.05, keys: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """KL(teacher || student) over every candidate InfoNCE scores for each query of the global batch.
    See :func:`teacher_kl`; this computes the student's :class:`Scores` itself."""
    student = batch_scores(queries, positives, negatives, negative_mask, keys)
    return teacher_kl(student, teacher, scale, temperature)


def teacher_kl(student: Scores, teacher: dict[str, torch.Tensor], scale: float = 20.0,
               temperature: float = 0.05) -> torch.Tensor:
    """KL(teacher || student) over the candidates ``student`` keeps.

    ``teacher`` holds the teacher's vectors of the same texts ("query", "positive" and, with hard
    negatives, "negative"), whose dot products are its scores (train.ensemble). The student's logits
    are its cosines times ``scale``, the teacher's its scores over ``temperature``; both softmaxes run
    over the candidates ``student.valid`` keeps (so the teacher's own mask is not needed). Scaled by
    the world size as ``info_nce`` is."""
    _, size = world()
    valid = student.valid
    taught = batch_scores(teacher["query"].float(), teacher["positive"].float(),
                          teacher["negative"].float() if "negative" in teacher else None)
    logits = (scale * student.cosines).float().masked_fill(~valid, float("-inf"))
    target = (taught.cosines / temperature).masked_fill(~valid, float("-inf"))
    log_t = F.log_softmax(target, dim=1)
    # masked entries are -inf in both: zero their difference before the product, or 0 x nan is nan
    kl = (log_t.exp() * (log_t - F.log_softmax(logits, dim=1)).masked_fill(~valid, 0.0)).sum(dim=1)
    return kl.mean() * size
