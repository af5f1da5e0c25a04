"""With 2 workers, each loss term sees the negatives of both: same loss and gradients as one
process computing the whole batch."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from train.loss import info_nce

B, D = 4, 8


def make_batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q, p, n = (torch.randn(2 * B, D, generator=g) for _ in range(3))
    mask = torch.tensor([True, False, True, True, True, True, False, True])
    return q, p, n, mask


def embed(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x @ w, dim=-1)


def single_process():
    q, p, n, mask = make_batch()
    w = torch.eye(D).requires_grad_()
    loss, seen = info_nce(embed(w, q), embed(w, p), embed(w, n), mask)
    loss.backward()
    return loss.item(), w.grad.clone(), seen


def _worker(rank: int, port: int, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    q, p, n, mask = make_batch()
    local = slice(rank * B, (rank + 1) * B)
    w = torch.eye(D).requires_grad_()
    loss, seen = info_nce(embed(w, q[local]), embed(w, p[local]), embed(w, n[local]), mask[local])
    loss.backward()
    dist.all_reduce(w.grad)
    w.grad /= 2  # what data-parallel training does
    out.put((rank, loss.item(), w.grad.clone(), seen))
    dist.destroy_process_group()


def test_two_workers_match_one_process_on_the_global_batch():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, port, out)) for r in range(2)]
    for p in procs:
        p.start()
    results = sorted(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    loss, grad, seen = single_process()
    # one process: 8 queries against 8 positives + 6 unmasked hard negatives = 13 negatives each
    assert seen == 13
    for rank, w_loss, w_grad, w_seen in results:
        assert w_seen == seen, rank
        # each worker's loss is the global loss x world size (undone by gradient averaging)
        assert abs(w_loss / 2 - loss) < 1e-5, rank
        # averaged over workers, the gradient equals the single-process gradient of the global loss
        torch.testing.assert_close(w_grad, grad, atol=1e-6, rtol=1e-5)
