"""Fault injection against a running FirstLight: find a deployment's replica processes, kill -9 one
while clients keep asking, and count what failed and how long answers stopped.

Shared by tests/test_faults.py (small, in CI) and benchmarks/reliability/bench_reliability.py (the figures).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import requests


def replica_pids(deployment: str, app: str = "firstlight") -> list[int]:
    """PIDs of the live replicas of ``deployment`` (Gateway, Encoder, Retriever, Reranker)."""
    from ray.util.state import list_actors

    wanted = f"ServeReplica:{app}:{deployment}"
    return sorted(a.pid for a in list_actors(filters=[("state", "=", "ALIVE")], raise_on_missing_output=False)
                  if a.class_name == wanted and a.pid)


def kill_one(deployment: str, app: str = "firstlight") -> int:
    """kill -9 one replica of ``deployment`` (as an OOM kill or a lost node would); its PID."""
    pids = replica_pids(deployment, app)
    if not pids:
        raise RuntimeError(f"no live {deployment} replica to kill")
    os.kill(pids[0], signal.SIGKILL)
    return pids[0]


def wait_for_replicas(deployment: str, count: int, timeout_s: float = 180, app: str = "firstlight") -> bool:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if len(replica_pids(deployment, app)) >= count:
            return True
        time.sleep(1)
    return False


@dataclass
class LoadRecord:
    """Each request as (sent at, answered at, HTTP status or 0 for a connection error)."""
    calls: list[tuple[float, float, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, start: float, end: float, status: int) -> None:
        with self.lock:
            self.calls.append((start, end, status))

    def summary(self, since: float = 0.0, until: float = float("inf")) -> dict:
        """Requests answered in [since, until) (so those in flight at a kill at ``since`` count): total,
        failed (5xx or no answer), the p99 latency, and the longest stall: the longest time no request
        was answered successfully, counted from ``since``."""
        with self.lock:
            everything = list(self.calls)
        calls = sorted(c for c in everything if since <= c[1] < until)
        ok_ends = sorted(end for _, end, status in everything if since <= end < until and 200 <= status < 500)
        failed = sum(1 for _, _, status in calls if status == 0 or status >= 500)
        gaps = np.diff([since, *ok_ends]) if ok_ends else np.array([0.0])
        latency = [1000 * (end - start) for start, end, status in calls if 200 <= status < 500]
        return {"requests": len(calls), "failed": failed,
                "failed_pct": round(100 * failed / len(calls), 3) if calls else 0.0,
                "p99_ms": round(float(np.percentile(latency, 99)), 1) if latency else None,
                "longest_stall_ms": round(1000 * float(gaps.max()), 1)}


def run_load(url: str, bodies: list[dict], clients: int, stop: threading.Event, record: LoadRecord,
             path: str = "/v1/recommend", timeout_s: float = 30, retry_5xx: bool = False) -> list[threading.Thread]:
    """``clients`` threads, each posting ``bodies`` round-robin until ``stop`` is set (closed loop).
    ``retry_5xx``: a failed request is sent once more, as a load balancer retrying a read would."""
    def client(offset: int) -> None:
        session = requests.Session()
        i = offset
        while not stop.is_set():
            start = time.time()
            for _ in range(2 if retry_5xx else 1):
                try:
                    status = session.post(url + path, json=bodies[i % len(bodies)], timeout=timeout_s).status_code
                except requests.RequestException:
                    status = 0
                    session = requests.Session()
                if 0 < status < 500:
                    break
            record.add(start, time.time(), status)
            i += clients

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    return threads
