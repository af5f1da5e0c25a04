"""Graceful overload: the Reranker refuses at once what its queue cannot score within the latency
budget, and the gateway then serves the first-stage ranking at once, marked as such."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from ranking.rerank import RerankStage
from serve.admission import Admission
from serve.messages import Reranked, RerankRequest


def test_admission_takes_what_fits_the_budget_and_refuses_the_rest_saying_why():
    admission = Admission(ms_per_pair=5)
    assert admission.admit(10, budget_ms=100) is None and admission.pending == 10  # 50 ms
    assert admission.admit(10, budget_ms=100) is None  # 100 ms: just in budget
    refused = admission.admit(10, budget_ms=100)
    assert "busy" in refused and "20 pairs queued ahead" in refused and "150 ms" in refused
    assert "rerank.budget_ms" in refused and admission.pending == 20  # a refusal holds nothing
    assert "busy" in Admission(ms_per_pair=5).admit(10, budget_ms=40)  # what is left of the budget counts
    admission.release(20)
    assert admission.pending == 0 and admission.admit(10, budget_ms=100) is None


def test_admission_learns_the_cost_of_a_pair_under_load_and_forgets_it_when_idle():
    admission = Admission(ms_per_pair=1, smoothing=0.5)
    admission.observe(10, elapsed_ms=50)  # 5 ms a pair now: the average moves half way
    assert admission.recent == pytest.approx(3.0)
    admission.observe(0, elapsed_ms=10)  # an empty batch says nothing
    assert admission.recent == pytest.approx(3.0)
    assert admission.admit(40, budget_ms=100) is None  # idle: judged at the cost measured alone (40 ms)
    assert admission.admit(20, budget_ms=100) is not None  # busy: at the recent cost, (40 + 20) x 3 ms
    admission.release(40)
    admission.observe(10, elapsed_ms=500)  # a spell of heavy contention ...
    assert admission.admit(10, budget_ms=100) is None  # ... does not lock an idle replica out


def burst_on_a_slow_reranker(folder: str) -> dict:
    """8 requests at once to the real Reranker deployment class (outside Serve), its model slowed to
    200 ms a batch: what each got and how long it waited. Run in a child process (below): using
    @serve.batch outside a replica leaves a batch queue on the class, which Serve could then no
    longer serialise for the other tests' deployments."""
    from ray.serve import batching

    from model.runtime import EncoderRuntime
    from serve.config import RerankerPart, Resources
    from serve.reranker_deployment import Reranker

    # outside a replica there is no deployment config for @serve.batch's start-up warning to read
    batching._BatchQueue._warn_if_max_batch_size_exceeds_max_ongoing_requests = lambda self: None
    part = RerankerPart(RerankStage(model=folder, depth=10), EncoderRuntime(backend="fp32", use_gpu="no"),
                        Resources(batch_max_size=1, batch_wait_s=0))
    replica = Reranker.func_or_class(part)
    scores = replica._score

    def slow(*args):
        time.sleep(0.2)
        return scores(*args)

    replica._score = slow
    replica.admission.ms_per_pair = replica.admission.recent = 20.0  # 10 pairs = 200 ms, as the slowed model measures
    request = RerankRequest(folder, ("cordless drill",), (tuple(f"product {i}" for i in range(10)),), budget_ms=300)

    async def timed():
        start = time.perf_counter()
        answer = await replica.rerank(request)
        return {"scores": None if answer.scores is None else len(answer.scores[0]), "refused": answer.refused,
                "waited_s": time.perf_counter() - start}

    async def burst():
        return await asyncio.gather(*(timed() for _ in range(8)))

    return {"answers": asyncio.run(burst()), "pending": replica.admission.pending}


def test_a_slow_reranker_under_load_answers_some_and_refuses_the_rest_at_once(tmp_path, tiny_model_dir):
    import json
    import subprocess
    import sys
    from pathlib import Path

    import torch
    from transformers import AutoTokenizer

    from model.reranker import export_reranker, new_reranker

    torch.manual_seed(0)
    folder = export_reranker(new_reranker(str(tiny_model_dir)), AutoTokenizer.from_pretrained(tiny_model_dir),
                             tmp_path / "model", max_length=32)
    code = ("import json; from tests.test_overload import burst_on_a_slow_reranker; "
            f"print(json.dumps(burst_on_a_slow_reranker({str(folder)!r})))")
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    scored = [a for a in result["answers"] if a["scores"] is not None]
    refused = [a for a in result["answers"] if a["refused"]]
    assert len(scored) == 1 and len(refused) == 7  # 200 ms fits 300; a second would end at ~400
    assert scored[0]["scores"] == 10 and "busy" in refused[0]["refused"]
    assert all(a["waited_s"] < 0.1 for a in refused), refused  # at once, not after the batch
    assert result["pending"] == 0


class _Handle:
    """Stands in for a Reranker handle: ``rerank.remote(request)``."""

    def __init__(self, answer=None, error: BaseException | None = None, delay: float = 0.0):
        self.rerank = self
        self.answer, self.error, self.delay = answer, error, delay

    def remote(self, request: RerankRequest):
        async def reply():
            await asyncio.sleep(self.delay)
            if self.error:
                raise self.error
            return self.answer or Reranked(scores=[np.arange(len(t), dtype=np.float32) for t in request.texts])
        return reply()


HITS = [[{"id": f"p{i}", "title": "", "text": "t", "score": 1.0 - i / 10} for i in range(5)]]


@pytest.mark.parametrize("handle, reason, counter", [
    (_Handle(Reranked(refused="reranker busy: 40 pairs queued ahead")), "busy", "refused"),
    (_Handle(error=RuntimeError("ActorDiedError: replica gone")), "replica gone", "fallbacks"),
    (_Handle(delay=0.5), "timed out", "fallbacks")])
def test_the_gateway_serves_the_first_stage_and_says_why_when_the_reranker_does_not_score(handle, reason, counter):
    from serve.ranking_path import RankingPath

    path = RankingPath(None, None, handle, RerankStage(model="m", depth=3, timeout_s=0.1), retries=0,
                       explained=False)  # no Ray: the handle stands in
    start = time.perf_counter()
    ranked, reranked, fallback = asyncio.run(path._rerank(["query"], HITS))
    waited = time.perf_counter() - start
    assert ranked == HITS and reranked is False and reason in fallback and "first-stage" in fallback
    assert getattr(path, counter) == 1
    if counter == "refused":
        assert waited < 0.05  # a refusal is served at once, not after the timeout


def test_a_request_whose_first_stage_spent_the_budget_skips_the_reranker_without_calling_it():
    from serve.ranking_path import RankingPath

    handle = _Handle(error=AssertionError("the reranker was called"))
    path = RankingPath(None, None, handle, RerankStage(model="m", depth=3, budget_ms=300), retries=0, explained=False)
    ranked, reranked, fallback = asyncio.run(path._rerank(["query"], HITS, left_ms=-5.0))
    assert ranked == HITS and reranked is False and "300 ms latency budget" in fallback and path.refused == 1


def test_a_reranker_that_scores_reorders_the_head():
    from serve.ranking_path import RankingPath

    path = RankingPath(None, None, _Handle(), RerankStage(model="m", depth=3), retries=0, explained=False)
    ranked, reranked, fallback = asyncio.run(path._rerank(["query"], HITS))
    assert reranked is True and fallback is None and [c["id"] for c in ranked[0]] == ["p2", "p1", "p0", "p3", "p4"]
