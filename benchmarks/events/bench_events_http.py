"""Events through the real server: what impression logging costs, how fast events are taken, and two
canaries decided by their arms' figures.

1. **Logging cost**: the served default (fine-tuned index + reranker) with ``events.log`` off, then
   on: p50 / p99 of /v1/recommend at 1 client (sequential test queries) and at 32 (for ``--seconds``).
2. **Event throughput**: 32 clients posting one click per call for ``--seconds``: events/s, p50, p99.
3. **Canaries** on the cold server (zero-shot hybrid, no reranker): simulated shoppers
   (benchmarks/events/clicks.py, training-split queries) through HTTP, ``--sessions`` per canary at a
   50% share; `firstlight loop`'s rule (firstlight/loop.py: judge) decides from the event log:
   (a) the model trained on 20,000 sessions' clicks (bench_cold_to_warm.py) against the zero-shot
   control, (b) then, with (a) promoted, the zero-shot model as a canary against it. The logged
   counts are checked against what the shoppers sent.

Usage (after bench_cold_to_warm.py):  python benchmarks/events/bench_events_http.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.events.clicks import run_http, training_queries  # noqa: E402
from benchmarks.report import update_section  # noqa: E402
from benchmarks.speed.bench_serve import drive, wait_ready  # noqa: E402
from common.paths import default_workdir  # noqa: E402

TOKEN = "bench-admin-token"


def start(settings: dict):

    from serve.app import run_serve
    from serve.config import ServeConfig

    cfg = ServeConfig.from_args(settings)
    url = run_serve(cfg, blocking=False)
    wait_ready(url, 600, "/readyz")
    return url, cfg


def sequential(url: str, queries: list[str], n: int) -> dict:
    import requests

    for q in queries[:5]:
        requests.post(url + "/v1/recommend", json={"text": q, "k": 10}, timeout=60)
    lat = []
    with requests.Session() as http:
        for q in queries[5:5 + n]:
            began = time.perf_counter()
            http.post(url + "/v1/recommend", json={"text": q, "k": 10}, timeout=60).raise_for_status()
            lat.append(1000 * (time.perf_counter() - began))
    return {"clients": 1, "requests": n, "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99))}


async def post_events(url: str, lists: list[dict], clients: int, seconds: float) -> dict:
    import aiohttp

    latencies, errors = [], 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        deadline = time.perf_counter() + seconds

        async def loop(i: int):
            nonlocal errors
            j = i
            while time.perf_counter() < deadline:
                shown = lists[j % len(lists)]
                event = {"type": "click", "request_id": shown["request_id"], "product_id": shown["items"][j % 10]["id"]}
                began = time.perf_counter()
                async with session.post(url + "/v1/events", json={"events": [event]}) as reply:
                    await reply.read()
                    if reply.status != 200:
                        errors += 1
                        continue
                latencies.append(1000 * (time.perf_counter() - began))
                j += clients

        began = time.perf_counter()
        await asyncio.gather(*(loop(i) for i in range(clients)))
        elapsed = time.perf_counter() - began
    lat = np.asarray(latencies)
    return {"clients": clients, "events": len(lat), "errors": errors, "events_per_s": len(lat) / elapsed,
            "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99))}


def speed(root: Path, out: Path, seconds: float, requests_1: int, order: tuple[bool, ...] = (False, True)) -> dict:
    import requests
    from ray import serve

    from data_pipeline.prepare import load_split

    queries = load_split(root / "data", "test")["query"].drop_duplicates().tolist()
    served = {"index_dir": str(root / "finetuned" / "index"), "rerank.model": str(root / "reranker" / "model"),
              "port": 8131}
    result = {}
    for logging_on in order:
        state = out / f"speed-state-{'on' if logging_on else 'off'}"
        shutil.rmtree(state, ignore_errors=True)
        url, _ = start({**served, "state_dir": str(state), "events.log": logging_on})
        try:
            one = sequential(url, queries, requests_1)
            asyncio.run(drive(url, queries, 4, 3))  # warm-up
            many = asyncio.run(drive(url, queries, 32, seconds))
            result["on" if logging_on else "off"] = {"1": one, "32": many}
            if logging_on:
                lists = [requests.post(url + "/v1/recommend", json={"text": q, "k": 10, "rerank": False},
                                       timeout=60).json() for q in queries[:64]]
                result["events"] = asyncio.run(post_events(url, lists, 32, seconds))
        finally:
            serve.shutdown()
    return result


def canaries(root: Path, out: Path, sessions: int, trained_index: Path) -> dict:
    import requests
    from ray import serve

    from data_pipeline.events import arm_counts
    from firstlight.loop import judge

    queries, grades = training_queries(root / "data")
    state = out / "canary-state"
    shutil.rmtree(state, ignore_errors=True)
    token = out / "admin-token"  # a file: the replicas do not see this process's environment
    token.write_text(TOKEN)
    url, cfg = start({"index_dir": str(root / "index"), "state_dir": str(state), "port": 8132,
                      "reload_roots": [str(root)], "admin_token_file": str(token)})
    admin = {"Authorization": f"Bearer {TOKEN}"}
    rounds = []
    try:
        for label, index, seed in (("trained on 20,000 sessions' clicks vs the zero-shot control", trained_index, 11),
                                   ("zero-shot vs the promoted trained control", root / "index", 12)):
            started = requests.post(url + "/v1/admin/canary", json={"index_dir": str(index), "share": 0.5},
                                    headers=admin, timeout=600)
            started.raise_for_status()
            since = started.json()["canary"]["started"]
            sent = run_http(url, queries, grades, sessions, seed=seed)
            time.sleep(1)  # impressions are written within flush_ms
            arms = arm_counts(cfg.resolved_events_dir(), since)
            decision = judge(arms, min_impressions=sessions // 4, margin=0.0)
            ended = requests.post(url + "/v1/admin/canary/" + ("promote" if decision["outcome"] == "promoted"
                                                                else "rollback"), headers=admin, timeout=600)
            ended.raise_for_status()
            logged = {"lists": sum(a["lists"] for a in arms.values()), "clicks": sum(a["click"] for a in arms.values()),
                      "purchases": sum(a["purchase"] for a in arms.values())}
            rounds.append({"label": label, "sent": sent, "logged": logged, "decision": decision})
            print(rounds[-1], flush=True)
    finally:
        serve.shutdown()
    return {"rounds": rounds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default=str(default_workdir() / "homedepot"))
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--requests", type=int, default=150, help="sequential requests at 1 client")
    parser.add_argument("--sessions", type=int, default=2000, help="simulated sessions per canary")
    parser.add_argument("--trained-index", default=None, help="default WORKDIR/cold_to_warm/index-20000-ipw")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-canaries", action="store_true",
                        help="reuse the last canary figures, and add this speed run to the last ones")
    parser.add_argument("--order", default="off,on", help="the logging settings' order for the speed part")
    args = parser.parse_args()

    from common.runtime import ensure_ray, setup_logging

    setup_logging()
    ensure_ray(num_cpus=2)
    root = Path(args.workdir)
    out = root / "events_bench"
    out.mkdir(parents=True, exist_ok=True)
    trained = Path(args.trained_index) if args.trained_index else root / "cold_to_warm" / "index-20000-ipw"
    order = tuple(x == "on" for x in args.order.split(","))
    runs_file, canaries_file = out / "speed_runs.json", out / "canaries.json"
    runs = json.loads(runs_file.read_text()) if runs_file.exists() and args.skip_canaries else []
    if not args.skip_speed:
        runs.append({"order": args.order, **speed(root, out, args.seconds, args.requests, order)})
        runs_file.write_text(json.dumps(runs))
    if args.skip_canaries and canaries_file.exists():
        found = json.loads(canaries_file.read_text())
    else:
        found = canaries(root, out, args.sessions, trained)
        canaries_file.write_text(json.dumps(found))
    result = {"speed_runs": runs, **found}
    write_report(result, args)


def write_report(result: dict, args) -> None:
    lines = []
    for run in result["speed_runs"]:
        for clients in ("1", "32"):
            off, on = run["off"][clients], run["on"][clients]
            lines.append(f"| {run['order'].replace(',', ', then ')} | {clients} | {off['p50_ms']:.1f} | {on['p50_ms']:.1f} | "
                         f"{on['p50_ms'] / off['p50_ms'] - 1:+.1%} | {off['p99_ms']:.1f} | {on['p99_ms']:.1f} |")
    events = next((run["events"] for run in result["speed_runs"] if "events" in run), None)
    speed_part = "" if not lines else f"""
**Impression logging's cost** on the served default (fine-tuned MiniLM index, hybrid, reranker over the top
10), `events.log` off and on, one server each, in the order given; 1 client: {args.requests} sequential test
queries; 32 clients: {args.seconds:g} s of test queries.

| order | clients | p50 off (ms) | p50 on (ms) | p50 change | p99 off (ms) | p99 on (ms) |
|---|---|---|---|---|---|---|
{chr(10).join(lines)}
""" + ("" if events is None else f"""
**Event throughput**: 32 clients posting one click per call for {args.seconds:g} s, each acknowledged once on
disk (fsync, grouped): {events['events_per_s']:.0f} events/s, p50 {events['p50_ms']:.1f} ms,
p99 {events['p99_ms']:.1f} ms, {events['errors']} refused.
""")
    rows = []
    for r in result["rounds"]:
        d = r["decision"]
        arms = d["arms"]
        rows.append(f"| {r['label']} | {arms['control']['lists']:,} / {arms['control']['click']:,} / "
                    f"{arms['control']['ctr']:.3f} | {arms['canary']['lists']:,} / {arms['canary']['click']:,} / "
                    f"{arms['canary']['ctr']:.3f} | {d['ctr_diff']:+.3f} (lower 95% {d['lower_95']:+.3f}) | "
                    f"**{d['outcome']}** | {r['sent']['sessions']:,} / {r['logged']['lists']:,}; "
                    f"{r['sent']['clicks']:,} / {r['logged']['clicks']:,} |")
    body = speed_part + f"""
**Canaries decided by their arms** on the cold server (zero-shot hybrid, no reranker), {args.sessions:,} simulated
sessions each (benchmarks/events/clicks.py through HTTP, training-split queries, sticky 50% share by session id);
`firstlight loop`'s rule promotes when the one-sided 95% lower bound of the canary's clicks per list minus the
control's is above 0.

| canary | control lists / clicks / clicks per list | canary lists / clicks / clicks per list | difference | decision | sessions sent / lists logged; clicks sent / logged |
|---|---|---|---|---|---|
{chr(10).join(rows)}
"""
    update_section("events_http", "Events through the server: logging cost, event throughput, canaries",
                   "python benchmarks/events/bench_events_http.py", body, result)


if __name__ == "__main__":
    main()
