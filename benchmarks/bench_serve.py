"""Serving benchmark: FirstLight's Ray Serve app vs a single-process FastAPI baseline, and autoscaling.

1. Throughput/latency: the same model (the index's) and the same FAISS flat index behind (a) the
   baseline (`baseline_server.py`: FastAPI + uvicorn, one process, no Ray) and (b) FirstLight's Serve
   application; real Home Depot test queries, k=10, at 1, 8 and 32 concurrent HTTP clients for
   ``--seconds`` each, one after the other on this machine, in one run.
2. Time split of FirstLight's requests: encoding, retrieval (as the gateway measures them) and the
   rest (HTTP proxy, gateway, routing), from each response's ``timing_ms``.
3. Autoscaling timeline: the Encoder deployment under 32 clients, then idle; replica count each second.

Usage (after `firstlight demo`): python benchmarks/bench_serve.py [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.report import update_section  # noqa: E402
from common.paths import default_workdir  # noqa: E402

CONCURRENCY = (1, 8, 32)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, timeout_s: float = 300) -> None:
    import requests

    start = time.time()
    while time.time() - start < timeout_s:
        try:
            if requests.get(url + "/healthz", timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    raise RuntimeError(f"{url} did not come up in {timeout_s}s")


async def drive(url: str, texts: list[str], clients: int, seconds: float) -> dict:
    """``clients`` concurrent loops of POST /v1/recommend for ``seconds``; latencies and server timings."""
    import aiohttp

    latencies, timings, errors = [], [], 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        deadline = time.perf_counter() + seconds

        async def loop(i: int):
            nonlocal errors
            j = i
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                async with session.post(url + "/v1/recommend", json={"text": texts[j % len(texts)], "k": 10}) as reply:
                    body = await reply.json()
                    if reply.status != 200:
                        errors += 1
                        if errors == 1:
                            print(f"{url}: HTTP {reply.status}: {body}", file=sys.stderr)
                        continue
                latencies.append(1000 * (time.perf_counter() - start))
                if "timing_ms" in body:
                    timings.append((latencies[-1], body["timing_ms"]))
                j += clients

        began = time.perf_counter()
        await asyncio.gather(*(loop(i) for i in range(clients)))
        elapsed = time.perf_counter() - began
    if not latencies:
        raise RuntimeError(f"{url}: no request succeeded ({errors} errors)")
    lat = np.asarray(latencies)
    out = {"clients": clients, "requests": len(lat), "errors": errors, "qps": len(lat) / elapsed,
           "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99))}
    if timings:
        out["split_ms"] = {"client": float(np.mean([t[0] for t in timings])),
                           "encode": float(np.mean([t[1]["encode"] for t in timings])),
                           "retrieve": float(np.mean([t[1]["retrieve"] for t in timings]))}
    return out


def measure(url: str, texts: list[str], seconds: float) -> list[dict]:
    asyncio.run(drive(url, texts, 4, 3))  # warm-up
    return [asyncio.run(drive(url, texts, c, seconds)) for c in CONCURRENCY]


def autoscale_timeline(url: str, texts: list[str], load_s: float, idle_s: float) -> list[tuple[float, int, str]]:
    import threading

    from ray import serve

    timeline, stop = [], threading.Event()
    start = time.time()

    def watch():
        while not stop.is_set():
            states = serve.status().applications["firstlight"].deployments["Encoder"].replica_states
            phase = "load" if time.time() - start < load_s else "idle"
            timeline.append((round(time.time() - start, 1), int(states.get("RUNNING", 0)), phase))
            time.sleep(1)

    watcher = threading.Thread(target=watch)
    watcher.start()
    asyncio.run(drive(url, texts, 32, load_s))
    time.sleep(idle_s)
    stop.set()
    watcher.join()
    return timeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default=str(default_workdir() / "homedepot"))
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--skip-autoscale", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from ray import serve

    from common.runtime import ensure_ray, setup_logging
    from data_pipeline.prepare import load_split
    from serve.app import build_app
    from serve.config import ServeConfig

    setup_logging()
    root = Path(args.workdir)
    texts = sorted(load_split(root / "data", "test")["query"].unique())[: args.queries]
    index_dir = str(root / "index")

    # (a) baseline, alone on the machine
    port = free_port()
    baseline = subprocess.Popen([sys.executable, str(Path(__file__).with_name("baseline_server.py")),
                                 "--index-dir", index_dir, "--port", str(port)])
    try:
        wait_ready(f"http://127.0.0.1:{port}")
        base = measure(f"http://127.0.0.1:{port}", texts, args.seconds)
    finally:
        baseline.terminate()
        baseline.wait()

    # (b) FirstLight: 2 Encoder replicas x 0.75 CPU (one torch thread each), Retriever and gateway 0.25 CPU
    ensure_ray(num_cpus=os.cpu_count())
    port = free_port()
    settings = dict(encoder_min_replicas=2, encoder_max_replicas=2, encoder_num_cpus=0.75, retriever_num_cpus=0.25,
                    gateway_num_cpus=0.25, batch_max_size=32, batch_wait_s=0.005, port=port)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(ServeConfig(index_dir=index_dir, **settings)), name="firstlight", route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    wait_ready(url)
    ours = measure(url, texts, args.seconds)
    serve.delete("firstlight")

    timeline, scale_settings = [], {}
    if not args.skip_autoscale:
        scale_settings = dict(encoder_min_replicas=1, encoder_max_replicas=3, encoder_num_cpus=0.5,
                              encoder_target_ongoing_requests=4, upscale_delay_s=2, downscale_delay_s=10,
                              retriever_num_cpus=0.25, gateway_num_cpus=0.25, port=port)
        serve.run(build_app(ServeConfig(index_dir=index_dir, **scale_settings)), name="firstlight", route_prefix="/")
        wait_ready(url)
        timeline = autoscale_timeline(url, texts, load_s=45, idle_s=45)
    serve.shutdown()

    rows = []
    for b, o in zip(base, ours):
        rows.append(f"| {b['clients']} | {b['qps']:.1f} | {b['p50_ms']:.1f} | {b['p99_ms']:.1f} | {o['qps']:.1f} | "
                    f"{o['p50_ms']:.1f} | {o['p99_ms']:.1f} | **{o['qps'] / b['qps']:.2f}** | "
                    f"{b['p50_ms'] / o['p50_ms']:.2f} | {o['errors'] + b['errors']} |")
    split = [f"| {o['clients']} | {o['split_ms']['client']:.1f} | {o['split_ms']['encode']:.1f} | "
             f"{o['split_ms']['retrieve']:.1f} | "
             f"{o['split_ms']['client'] - o['split_ms']['encode'] - o['split_ms']['retrieve']:.1f} |" for o in ours]
    body = f"""
{len(texts)} real Home Depot test queries, k=10, all-MiniLM-L6-v2 + FAISS flat over 54,667 products,
{args.seconds:.0f} s per level, HTTP clients (aiohttp) on the same machine. Baseline: `benchmarks/baseline_server.py`
(FastAPI + uvicorn, one process, no Ray, no batching). FirstLight: `serve/app.py` with
{json.dumps({k: v for k, v in settings.items() if k != 'port'})}.

Why these settings: two Encoder replicas of 0.75 CPU with one torch thread each keep both cores
busy with the model without oversubscribing them; batches of up to 32 texts with a 5 ms wait fill
within the wait at 32 clients (one MiniLM forward pass over 32 short queries costs little more than
over one) while a lone request waits at most 5 ms; the Retriever (which also batches concurrent
searches into one FAISS call) and the gateway mostly wait on I/O and share the remaining 0.5 CPU.

| clients | baseline QPS | p50 ms | p99 ms | FirstLight QPS | p50 ms | p99 ms | QPS ratio | p50 speed-up | errors |
|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Where a FirstLight request's time goes (means; "encode" includes waiting for a batch to fill and
queueing at the Encoder, "other" is the HTTP proxy, the gateway and routing):

| clients | client-side ms | encode ms | retrieve ms | other ms |
|---|---|---|---|---|
{chr(10).join(split)}
"""
    if timeline:
        changes = [t for i, t in enumerate(timeline) if i == 0 or t[1] != timeline[i - 1][1]]
        body += f"""
Autoscaling ({json.dumps({k: v for k, v in scale_settings.items() if k != 'port'})}): 32 clients for 45 s,
then idle for 45 s; Encoder replicas RUNNING when they changed (seconds from the start):

| t (s) | replicas | phase |
|---|---|---|
{chr(10).join(f"| {t} | {n} | {p} |" for t, n, p in changes)}
"""
    update_section("serve", "Serving: FirstLight (Ray Serve) vs a single-process FastAPI baseline",
                   "python benchmarks/bench_serve.py", body,
                   {"baseline": base, "firstlight": ours, "settings": settings, "autoscale": timeline,
                    "autoscale_settings": scale_settings})


if __name__ == "__main__":
    main()
