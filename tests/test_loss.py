"""With 2 workers, each loss term sees the negatives of both: same loss and gradients as one
process computing the whole batch."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from train.losses import InfoNCELoss, info_nce
from train.losses import embed as engine_embed
from train.steps import CachedStep

B, D = 4, 8


def make_batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q, p, n = (torch.randn(2 * B, D, generator=g) for _ in range(3))
    mask = torch.tensor([True, False, True, True, True, True, False, True])
    return q, p, n, mask


def make_keys():
    """Rows 0 and 7 (on different workers) are one query; row 3's hard negative is row 5's product."""
    query = torch.tensor([10, 11, 12, 13, 14, 15, 16, 10])
    positive = torch.tensor([20, 21, 22, 23, 24, 25, 26, 27])
    negative = torch.tensor([30, 31, 32, 25, 34, 35, 36, 37])
    return {"query": query, "positive": positive, "negative": negative}


def embed(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x @ w, dim=-1)


def single_process(variant: str = "plain"):
    q, p, n, mask = make_batch()
    w = torch.eye(D).requires_grad_()
    keys = make_keys() if variant != "plain" else None
    loss, seen = info_nce(embed(w, q), embed(w, p), embed(w, n), mask, keys=keys, symmetric=variant == "symmetric")
    loss.backward()
    return loss.item(), w.grad.clone(), seen


def _worker(rank: int, port: int, out, variant: str):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    q, p, n, mask = make_batch()
    local = slice(rank * B, (rank + 1) * B)
    w = torch.eye(D).requires_grad_()
    keys = {k: v[local] for k, v in make_keys().items()} if variant != "plain" else None
    loss, seen = info_nce(embed(w, q[local]), embed(w, p[local]), embed(w, n[local]), mask[local], keys=keys,
                          symmetric=variant == "symmetric")
    loss.backward()
    dist.all_reduce(w.grad)
    w.grad /= 2  # what data-parallel training does
    # a numpy copy travels by value: a torch tensor would travel as a shared-memory handle that the
    # parent can only open while this process lives, a race with its exit
    out.put((rank, loss.item(), w.grad.numpy().copy(), seen))
    dist.destroy_process_group()


@pytest.mark.parametrize("variant", ["plain", "duplicates-masked", "symmetric"])
def test_two_workers_match_one_process_on_the_global_batch(variant):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, port, out, variant)) for r in range(2)]
    for p in procs:
        p.start()
    results = sorted(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    loss, grad, seen = single_process(variant)
    # one process: 8 queries against 8 positives + 6 unmasked hard negatives = 13 negatives each;
    # with keys, rows 0 and 7 lose each other's positive and row 5 loses row 3's negative (its product)
    assert seen == (13 if variant == "plain" else (8 * 13 - 3) / 8)
    for rank, w_loss, w_grad, w_seen in results:
        assert w_seen == seen, rank
        # each worker's loss is the global loss x world size (undone by gradient averaging)
        assert abs(w_loss / 2 - loss) < 1e-5, rank
        # averaged over workers, the gradient equals the single-process gradient of the global loss
        torch.testing.assert_close(torch.from_numpy(w_grad), grad, atol=1e-6, rtol=1e-5)


def test_masked_duplicates_are_not_negatives():
    """A second positive of the same query and a copy of the query's product drop out of its softmax."""
    q, p, n, mask = make_batch()
    keys = make_keys()
    loss, _ = info_nce(F.normalize(q, dim=-1), F.normalize(p, dim=-1), F.normalize(n, dim=-1), mask, keys=keys)
    logits = 20.0 * F.normalize(q, dim=-1) @ torch.cat([F.normalize(p, dim=-1), F.normalize(n, dim=-1)]).T
    allowed = torch.cat([torch.ones(8, 8, dtype=torch.bool), mask.expand(8, -1)], dim=1)
    allowed[0, 7] = allowed[7, 0] = False  # the same query's other positive
    allowed[5, 8 + 3] = False  # row 3's negative is row 5's own product
    expected = torch.stack([-torch.log_softmax(logits[i].masked_fill(~allowed[i], float("-inf")), 0)[i]
                            for i in range(8)]).mean()
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    plain, _ = info_nce(F.normalize(q, dim=-1), F.normalize(p, dim=-1), F.normalize(n, dim=-1), mask)
    assert float(plain) > float(loss)  # false negatives only ever add to the loss
    # symmetric: each positive also picks its query among the 8 queries (same pairs masked)
    both, _ = info_nce(F.normalize(q, dim=-1), F.normalize(p, dim=-1), F.normalize(n, dim=-1), mask, keys=keys,
                       symmetric=True)
    back = logits[:, :8].T.masked_fill(~allowed[:, :8].T, float("-inf"))
    reverse = torch.stack([-torch.log_softmax(back[j], 0)[j] for j in range(8)]).mean()
    assert float(both) == pytest.approx((float(expected) + float(reverse)) / 2, rel=1e-6)


def test_the_loss_module_scores_a_batch_as_info_nce_does():
    """InfoNCELoss reads the batch's keys and negative mask itself: the same loss as the function."""
    q, p, n, mask = make_batch()
    keys = make_keys()
    embedded = {"query": F.normalize(q, dim=-1), "positive": F.normalize(p, dim=-1), "negative": F.normalize(n, dim=-1)}
    batch = {"has_negative": mask, **{f"{k}_key": v for k, v in keys.items()}}
    for symmetric in (False, True):
        loss, logged = InfoNCELoss(scale=20.0, symmetric=symmetric)(embedded, batch)
        expected, seen = info_nce(*embedded.values(), mask, keys=keys, symmetric=symmetric)
        assert float(loss) == pytest.approx(float(expected)) and logged["negatives_per_query"] == seen
    plain, _ = InfoNCELoss(mask_duplicates=False)(embedded, batch)
    assert float(plain) == pytest.approx(float(info_nce(*embedded.values(), mask)[0]))
    without, logged = InfoNCELoss(hard_negatives=False)({"query": embedded["query"], "positive": embedded["positive"]},
                                                        batch)
    assert InfoNCELoss(hard_negatives=False).texts() == ("query", "positive") and logged["negatives_per_query"] < 8


def test_cached_gradient_step_equals_the_full_batch_gradient(tiny_model_dir):
    """GradCache in chunks of 4 gives the full batch's loss and weight gradients, dropout included."""
    from transformers import AutoModel


    torch.manual_seed(0)
    model = AutoModel.from_pretrained(tiny_model_dir, hidden_dropout_prob=0.1).train()

    class Engine:  # the two calls a step makes, on a plain model in this process
        device = torch.device("cpu")

        def forward(self, ids, mask):
            return model(input_ids=ids, attention_mask=mask), mask

        def backward_step(self, loss, whole=False):
            loss.backward()
            return True

    g = torch.Generator().manual_seed(1)
    batch = {f"{k}_ids": torch.randint(1000, 5000, (12, 10), generator=g) for k in ("query", "positive", "negative")}
    batch.update({f"{k}_mask": torch.ones(12, 10, dtype=torch.int64) for k in ("query", "positive", "negative")})
    batch["has_negative"] = torch.tensor([True] * 10 + [False] * 2)
    batch.update({f"{k}_key": torch.arange(12) + 100 * i for i, k in enumerate(("query", "positive", "negative"))})
    batch["query_key"][11] = batch["query_key"][2]  # one query twice: masked in both computations

    torch.manual_seed(5)  # same dropout draws in both: the cached step replays each chunk's randomness
    loss, logged, stepped = CachedStep(InfoNCELoss(), chunk=4)(Engine(), batch)
    seen = logged["negatives_per_query"]
    cached = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()

    torch.manual_seed(5)
    engine = Engine()
    parts = {k: torch.cat([engine_embed(engine, batch[f"{k}_ids"][s:s + 4], batch[f"{k}_mask"][s:s + 4])
                           for s in range(0, 12, 4)]) for k in ("query", "positive", "negative")}
    keys = {k: batch[f"{k}_key"] for k in ("query", "positive", "negative")}
    full, full_seen = info_nce(parts["query"], parts["positive"], parts["negative"], batch["has_negative"], keys=keys)
    full.backward()
    assert stepped and seen == full_seen == 12 + 10 - 1 - 2 / 12
    assert float(loss) == pytest.approx(float(full.detach()), rel=1e-5)
    for name, p in model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(cached[name], p.grad, rtol=1e-4, atol=1e-6)
