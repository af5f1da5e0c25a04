"""Admission for an optional stage with a latency budget: the Reranker takes a request only when the
work queued ahead of it, plus its own, can finish within what is left of the request's budget;
otherwise it says no at once and the gateway serves the first-stage ranking, marked as such.

Without this, a busy reranker's queue grows until every request waits out the gateway's timeout
(the timeout then becomes the normal latency). The estimate is the replica's own measured cost of
a (query, product) pair, an exponential average over the batches it scored, times the pairs it
holds (the batch running and those waiting) plus the new request's. A cost per pair overstates
large batches slightly (their fixed part is shared), so the estimate errs on the side of answering
in time. Under load the measured cost rises (the stages share the CPUs); an idle replica judges a
request by the cost it measured alone, so a cost learnt in a busy spell cannot lock it out once the
spell is over. Pure Python, so it is tested without Ray.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Admission:
    ms_per_pair: float  # the cost of a pair measured alone (the replica's warm-up): the idle estimate
    smoothing: float = 0.2  # the weight of the latest batch in the running average
    pending: int = 0  # pairs admitted and not yet scored
    recent: float = field(default=0.0)  # the running average; starts at the idle cost

    def __post_init__(self):
        self.recent = self.recent or self.ms_per_pair

    def admit(self, pairs: int, budget_ms: float) -> str | None:
        """Take ``pairs`` (and count them as pending) or return why not."""
        cost = self.recent if self.pending else min(self.recent, self.ms_per_pair)
        expected = (self.pending + pairs) * cost
        if expected > budget_ms:
            ahead = f"{self.pending} pairs queued ahead and " if self.pending else ""
            return (f"reranker busy: {ahead}{pairs} of this request's would take ~{expected:.0f} ms, over the "
                    f"{budget_ms:.0f} ms left of the latency budget (rerank.budget_ms)")
        self.pending += pairs
        return None

    def release(self, pairs: int) -> None:
        self.pending = max(0, self.pending - pairs)

    def observe(self, pairs: int, elapsed_ms: float) -> None:
        """A batch of ``pairs`` was scored in ``elapsed_ms``."""
        if pairs > 0:
            self.recent += self.smoothing * (elapsed_ms / pairs - self.recent)
