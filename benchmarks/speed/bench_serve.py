"""Serving benchmark: FirstLight's Ray Serve app vs a single-process FastAPI baseline, and autoscaling.

1. Throughput/latency: the same model (the index's) and the same FAISS flat index behind (a) the
   baseline (`baseline_server.py`: FastAPI + uvicorn, one process, no Ray), in torch fp32 and with
   FirstLight's inference backend, and (b) FirstLight's Serve application, plain and with Ray Serve's
   throughput-optimised mode; real Home Depot test queries, k=10, at 1, 8 and 32 concurrent HTTP
   clients for ``--seconds`` each, one after the other on this machine, in one run.
2. Time split of FirstLight's requests: encoding, retrieval (as the gateway measures them) and the
   rest (HTTP proxy, gateway, routing), from each response's ``timing_ms``.
3. Autoscaling timeline: the Encoder deployment under 32 clients, then idle; replica count each second.

Usage (after `firstlight demo`): python benchmarks/speed/bench_serve.py [--seconds 20]
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

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.report import update_section  # noqa: E402
from common.paths import default_workdir  # noqa: E402

CONCURRENCY = (1, 8, 32)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, timeout_s: float = 300, path: str = "/healthz") -> None:
    """Until ``url + path`` answers 200 (/readyz: every deployment answers a real request)."""
    import requests

    start = time.time()
    while time.time() - start < timeout_s:
        try:
            if requests.get(url + path, timeout=30).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    raise RuntimeError(f"{url} did not come up in {timeout_s}s")


async def drive(url: str, texts: list[str], clients: int, seconds: float, extra: dict | None = None,
                min_items: int = 0) -> dict:
    """``clients`` concurrent loops of POST /v1/recommend for ``seconds``; latencies and server timings.
    ``extra``: more of the request body (a filter); a reply with fewer than ``min_items`` items counts
    as an error."""
    import aiohttp

    latencies, timings, errors = [], [], 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        deadline = time.perf_counter() + seconds

        async def loop(i: int):
            nonlocal errors
            j = i
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                async with session.post(url + "/v1/recommend", json={"text": texts[j % len(texts)], "k": 10,
                                                                      **(extra or {})}) as reply:
                    body = await reply.json()
                    if reply.status != 200 or len(body.get("items", ())) < min_items:
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
                           "encode": float(np.mean([t[1].get("encode", 0.0) for t in timings])),  # 0: encoded by the Retriever
                           "retrieve": float(np.mean([t[1]["retrieve"] for t in timings]))}
    return out


def measure(url: str, texts: list[str], seconds: float) -> list[dict]:
    asyncio.run(drive(url, texts, 4, 3))  # warm-up
    return [asyncio.run(drive(url, texts, c, seconds)) for c in CONCURRENCY]


def autoscale_timeline(url: str, texts: list[str], load_s: float, idle_s: float,
                       deployment: str) -> list[tuple[float, int, str]]:
    import threading

    from ray import serve

    timeline, stop = [], threading.Event()
    start = time.time()

    def watch():
        while not stop.is_set():
            states = serve.status().applications["firstlight"].deployments[deployment].replica_states
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


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default=str(default_workdir() / "homedepot"))
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--skip-autoscale", action="store_true")
    parser.add_argument("--modes", default="default,no-batch-wait,throughput-optimized",
                        help="FirstLight runs: default, no-batch-wait (batch_wait_s 0) and/or throughput-optimized "
                             "(Ray Serve's throughput-optimised data plane, which starts its own Ray)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cuda: encoders (baseline's and FirstLight's) on GPU 0 (section serve_gpu)")
    args = parser.parse_args(argv)
    gpu = args.device == "cuda"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import ray
    from ray import serve

    from common.runtime import ensure_ray, setup_logging
    from data_pipeline.prepare import load_split
    from serve.app import build_app
    from serve.config import ServeConfig

    setup_logging()
    root = Path(args.workdir)
    texts = sorted(load_split(root / "data", "test")["query"].unique())[: args.queries]
    index_dir = str(root / "index")

    # (a) the baseline, alone on the machine: as a user would write it (torch fp32), then with
    # FirstLight's inference backend, so the backend's gain and Ray's overhead are each visible
    baselines = {}
    for backend in ("fp32", "auto"):
        port = free_port()
        baseline = subprocess.Popen([sys.executable, str(Path(__file__).with_name("baseline_server.py")),
                                     "--index-dir", index_dir, "--port", str(port), "--backend", backend,
                                     "--device", args.device])
        try:
            wait_ready(f"http://127.0.0.1:{port}")
            baselines[backend] = measure(f"http://127.0.0.1:{port}", texts, args.seconds)
        finally:
            baseline.terminate()
            baseline.wait()

    # (b) FirstLight. On a CPU the Retriever encodes the queries itself (one Ray hop; the Encoder only
    # embeds products added through the API): one Retriever replica with one thread. On a
    # GPU the Encoder encodes them: 2 Encoder replicas sharing the GPU. Then the same with Ray Serve's
    # throughput-optimised mode (a fresh Ray started with it set).
    settings = {"retriever.min_replicas": 1, "retriever.max_replicas": 1, "retriever.num_cpus": 1.0,
                "encoder.min_replicas": 1, "encoder.max_replicas": 1, "encoder.num_cpus": 0.25,
                "gateway.num_cpus": 0.25}
    if gpu:  # two Encoder replicas share the GPU; FAISS moves there too (the baseline keeps it on the CPU)
        settings = {"encoder.min_replicas": 2, "encoder.max_replicas": 2, "encoder.num_gpus": 0.5,
                    "encoder.num_cpus": 1.0, "encoder.batch_max_size": 32, "encoder.batch_wait_s": 0.005,
                    "retriever.num_cpus": 0.25, "gateway.num_cpus": 0.25, "runtime.use_gpu": "yes"}
    ours, timeline, scale_settings = {}, [], {}
    ray_was_up = ray.is_initialized()  # a caller's Ray (a test session) is left running
    modes = args.modes.split(",")
    if "throughput-optimized" in modes and ray_was_up:
        sys.exit("the throughput-optimized mode starts a Ray of its own: run without Ray up, or --modes default")
    for mode in modes:
        if mode == "throughput-optimized":  # read when Ray starts: a fresh Ray for this mode
            ray.shutdown()
            os.environ["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = "1"
        ensure_ray(num_cpus=os.cpu_count())
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        mode_settings = {**settings, "encoder.batch_wait_s": 0.0, "retriever.batch_wait_s": 0.0} \
            if mode == "no-batch-wait" else settings
        serve.run(build_app(ServeConfig.from_args({"index_dir": index_dir, "port": port, **mode_settings})),
                  name="firstlight", route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        wait_ready(url)
        ours[mode] = measure(url, texts, args.seconds)
        serve.delete("firstlight")
        if mode == "default" and not (args.skip_autoscale or gpu):
            # the deployment that encodes the queries scales (the Retriever, on a CPU)
            scale_settings = {"retriever.min_replicas": 1, "retriever.max_replicas": 3, "retriever.num_cpus": 0.5,
                              "retriever.target_ongoing_requests": 4, "retriever.upscale_delay_s": 2,
                              "retriever.downscale_delay_s": 10, "encoder.max_replicas": 1,
                              "encoder.num_cpus": 0.25, "gateway.num_cpus": 0.25}
            serve.run(build_app(ServeConfig.from_args({"index_dir": index_dir, "port": port, **scale_settings})),
                      name="firstlight", route_prefix="/")
            wait_ready(url)
            timeline = autoscale_timeline(url, texts, load_s=45, idle_s=45, deployment="Retriever")
        serve.shutdown()
    if not ray_was_up:
        ray.shutdown()
    os.environ.pop("RAY_SERVE_THROUGHPUT_OPTIMIZED", None)

    names = {"default": "FirstLight", "no-batch-wait": "FirstLight, no batch wait",
             "throughput-optimized": "FirstLight, throughput-optimised Serve"}
    columns = [("baseline, torch fp32", baselines["fp32"]), ("baseline, FirstLight's backend", baselines["auto"]),
               *[(names[m], ours[m]) for m in modes]]
    best = max(ours, key=lambda m: ours[m][-1]["qps"])
    rows = []
    for i, clients in enumerate(CONCURRENCY):
        cells = " | ".join(f"{c[i]['qps']:.1f} / {c[i]['p50_ms']:.1f} / {c[i]['p99_ms']:.1f}" for _, c in columns)
        o, b, bb = ours[best][i], baselines["fp32"][i], baselines["auto"][i]
        rows.append(f"| {clients} | {cells} | **{o['qps'] / b['qps']:.2f}** / {o['p50_ms'] / b['p50_ms']:.2f} | "
                    f"{o['qps'] / bb['qps']:.2f} / {o['p50_ms'] / bb['p50_ms']:.2f} | "
                    f"{sum(c[i]['errors'] for _, c in columns)} |")
    split = [f"| {mode} | {o['clients']} | {o['split_ms']['client']:.1f} | {o['split_ms']['encode']:.1f} | "
             f"{o['split_ms']['retrieve']:.1f} | "
             f"{o['split_ms']['client'] - o['split_ms']['encode'] - o['split_ms']['retrieve']:.1f} |"
             for mode in ours for o in ours[mode]]
    body = f"""
{len(texts)} real Home Depot test queries, k=10, the index's model + FAISS flat ({"encoders on GPU 0" if gpu else "CPU"}),
{args.seconds:.0f} s per level, HTTP clients (aiohttp) on the same machine, all in one run. Baseline:
`benchmarks/speed/baseline_server.py` (FastAPI + uvicorn, one process, no Ray, no batching), first in torch fp32
as a user would write it, then with FirstLight's default inference backend (`auto`: {resolved_backend(args.device)} here).
FirstLight: `serve/app.py` with {json.dumps(settings)} and the default backend; then the same with
`batch_wait_s` 0 (no wait to fill a batch: batches form only from requests queued behind a running
one), and with `RAY_SERVE_THROUGHPUT_OPTIMIZED=1` (Ray Serve's throughput-optimised data plane; a Ray
started with it).

Why these settings: with the int8 backend on a CPU the Retriever encodes each batch of queries
itself and searches it in the same call (one Ray hop per request, model/onnx_text.py); one
Retriever replica with one thread leaves the other core to Ray's HTTP proxy and the gateway. Tried
on this machine and slower: two Retriever replicas of 0.75 CPU (p50 28.2 ms at one client, 72.6
requests/s at 32) and one replica with two threads (38.2 ms, 74.2 requests/s), both oversubscribing
2 cores. The Encoder then only embeds products added through the API. On a GPU, two Encoder replicas
share it and encode the queries.

Each cell: QPS / p50 ms / p99 ms. Ratios use the faster FirstLight mode ({best}): QPS ratio / p50 ratio.

| clients | {" | ".join(n for n, _ in columns)} | vs fp32 baseline | vs same-backend baseline | errors |
|---|---|---|{"---|" * len(columns)}
{chr(10).join(rows)}

Where a FirstLight request's time goes (means; "encode" includes waiting for a batch to fill and
queueing at the Encoder, 0 where the Retriever encodes: "retrieve" then holds both; "other" is the
HTTP proxy, the gateway and routing):

| mode | clients | client-side ms | encode ms | retrieve ms | other ms |
|---|---|---|---|---|---|
{chr(10).join(split)}
"""
    if timeline:
        changes = [t for i, t in enumerate(timeline) if i == 0 or t[1] != timeline[i - 1][1]]
        body += f"""
Autoscaling ({json.dumps(scale_settings)}): 32 clients for 45 s,
then idle for 45 s; Retriever replicas RUNNING when they changed (seconds from the start):

| t (s) | replicas | phase |
|---|---|---|
{chr(10).join(f"| {t} | {n} | {p} |" for t, n, p in changes)}
"""
    name, title = (("serve_gpu", "Serving with the encoder on a GPU") if gpu else
                   ("serve", "Serving: FirstLight (Ray Serve) vs a single-process FastAPI baseline"))
    raw = {"baseline": baselines, "firstlight": ours, "settings": settings, "autoscale": timeline,
           "autoscale_settings": scale_settings}
    update_section(name, title, "python benchmarks/speed/bench_serve.py " + " ".join(sys.argv[1:] if argv is None else argv),
                   body, raw)
    return {**raw, "table": body}


def resolved_backend(device: str = "cpu") -> str:
    import torch

    from model.backends import resolve_backend

    return resolve_backend("auto", torch.device(device))


if __name__ == "__main__":
    main()
