"""Simulated shoppers: what FirstLight's learning from events is measured with (docs/events.md).

A session is one shopper issuing one query drawn (uniformly, seeded) from the **training split**
(never the test split), looking at the top 10 it is shown, and clicking. The click model:

- **examination** is position based: position k is looked at with probability (1/k)^ETA, ETA = 1;
- **a click** on an examined product happens with probability CLICK(r) = 0.05 + 0.9 ((r - 1) / 2)^2
  from its graded relevance r (Home Depot's mean crowd grade, 1 to 3): 0.05 for an irrelevant
  product (noise), 0.28 at r = 2, 0.45 at 2.33, 0.95 at 3;
- **an unjudged product** (most of any top 10: the crowd judged about 6 a query) counts as r =
  UNJUDGED = 2.0. Measured on the judged pool: products the crowd never judged grade 1.76 on the
  pool's scale, against 2.12 for those it did, which the crowd graded 2.45; shifted by that gap,
  1.76 reads 2.09 on the crowd's scale, rounded down to 2.0;
- **a purchase** follows a click with probability 0.3 for r >= 2.67, else 0.03; an add_to_cart
  precedes every purchase.

Training never reads these parameters: position bias is estimated from the logs' swaps
(train/event_pairs.py). The simulator writes through the server's own writer and request ids
(serve/event_log.py), so the files are what a server would have logged; ``run_http`` drives a
real server instead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import requests

from data_pipeline.events import EVENTS, IMPRESSIONS
from data_pipeline.prepare import load_split
from serve.event_log import AppendLog, EventLogging, RequestIds, choose_swap

ETA = 1.0
UNJUDGED = 2.0


@dataclass(frozen=True)
class ClickModel:
    eta: float = ETA
    unjudged: float = UNJUDGED
    k: int = 10

    def examined(self, rng, n: int) -> np.ndarray:
        return rng.random(n) < (1.0 / np.arange(1, n + 1)) ** self.eta

    @staticmethod
    def click_probability(grade: float) -> float:
        return 0.05 + 0.9 * ((grade - 1) / 2) ** 2

    def react(self, rng, shown: list[str], grades: dict[str, float]) -> list[tuple[str, str]]:
        """(event type, product) for one shopper looking at ``shown``, in the order they happen."""
        out = []
        looked = self.examined(rng, len(shown))
        for product, seen in zip(shown, looked):
            grade = grades.get(product, self.unjudged)
            if seen and rng.random() < self.click_probability(grade):
                out.append(("click", product))
                if rng.random() < (0.3 if grade >= 2.67 else 0.03):
                    out += [("add_to_cart", product), ("purchase", product)]
        return out


def training_queries(prepared) -> tuple[list[str], dict[str, dict[str, float]]]:
    """The training split's queries and their mean crowd grades per product."""
    judged = load_split(prepared, "train").groupby(["query", "product_id"], as_index=False)["relevance"].mean()
    grades = {q: dict(zip(g["product_id"], g["relevance"])) for q, g in judged.groupby("query")}
    return sorted(grades), grades


def run_in_process(rankings: dict[str, list[str]], grades: dict[str, dict[str, float]], sessions: int, out,
                   seed: int = 0, swap_share: float = 0.02, model: ClickModel = ClickModel(),
                   version: str = "zero-shot", start_ts: float = 1_765_000_000.0) -> dict:
    """``sessions`` simulated visits to a server that returns ``rankings[query]`` (top ``model.k``),
    logged under ``out`` exactly as the server logs them. Returns counts."""
    rng = np.random.default_rng(seed)
    queries = sorted(rankings)
    log = AppendLog(out, EventLogging(flush_ms=50, max_queue=1_000_000), writer=f"simulator-{seed}")
    ids = RequestIds(out)
    counts = {"sessions": 0, "clicks": 0, "purchases": 0, "swapped": 0}
    for n in range(sessions):
        query = queries[rng.integers(len(queries))]
        shown = list(rankings[query][: model.k])
        swap = choose_swap(rng, len(shown), swap_share, 10)
        if swap:
            shown[0], shown[swap[1] - 1] = shown[swap[1] - 1], shown[0]
            counts["swapped"] += 1
        ts = start_ts + 30.0 * n
        request_id = ids.issue(ts)
        log.offer(IMPRESSIONS, {"request_id": request_id, "ts": ts, "session_id": f"sim-{seed}-{n}", "text": query,
                                "query": query, "version": version, "arm": "control", "items": shown,
                                "swap": list(swap) if swap else None, "reranked": False})
        reactions = model.react(rng, shown, grades.get(query, {}))
        if reactions:
            log.append(EVENTS, [{"request_id": request_id, "ts": ts + 5.0 + i, "type": kind, "product_id": product,
                                 "position": shown.index(product) + 1, "arm": "control", "shown_at": ts}
                                for i, (kind, product) in enumerate(reactions)])
        counts["sessions"] += 1
        counts["clicks"] += sum(kind == "click" for kind, _ in reactions)
        counts["purchases"] += sum(kind == "purchase" for kind, _ in reactions)
    log.close(timeout=120)
    return counts


def run_http(url: str, queries: list[str], grades: dict[str, dict[str, float]], sessions: int, seed: int = 0,
             model: ClickModel = ClickModel(), timeout_s: float = 60) -> dict:
    """The same shoppers against a running server: POST /v1/recommend, then /v1/events for what they did
    (the server swaps and logs by itself)."""
    rng = np.random.default_rng(seed)
    counts = {"sessions": 0, "clicks": 0, "purchases": 0, "failed": 0}
    started = time.perf_counter()
    with requests.Session() as http:
        for n in range(sessions):
            query = queries[rng.integers(len(queries))]
            reply = http.post(f"{url}/v1/recommend", json={"text": query, "k": model.k,
                                                           "session": {"id": f"sim-{seed}-{n}"}}, timeout=timeout_s)
            if not reply.ok:
                counts["failed"] += 1
                continue
            body = reply.json()
            reactions = model.react(rng, [item["id"] for item in body["items"]], grades.get(query, {}))
            if reactions:
                sent = http.post(f"{url}/v1/events", json={"events": [
                    {"type": kind, "request_id": body["request_id"], "product_id": product}
                    for kind, product in reactions]}, timeout=timeout_s)
                counts["failed"] += not sent.ok
            counts["sessions"] += 1
            counts["clicks"] += sum(kind == "click" for kind, _ in reactions)
            counts["purchases"] += sum(kind == "purchase" for kind, _ in reactions)
    counts["seconds"] = time.perf_counter() - started
    return counts
