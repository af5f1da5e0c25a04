"""Reliability of the served app on the full Home Depot index: fuzzing, replica loss, kill -9, soak.

Parts (each writes its own section of benchmarks/RESULTS.md; `--part all` runs the first three):
- fuzz: schemathesis over the served OpenAPI document, every route, without and with the admin
  token (benchmarks/reliability/fuzz_api.py): requests sent and 5xx answered.
- kill: 8 closed-loop clients on real test queries; one replica of each deployment (Encoder,
  Retriever, Reranker, Gateway) is killed with SIGKILL in turn; failed requests and the longest
  stall (no successful answer) from the kill on, against the p99 before it. Configurations: the
  production shape (two of each, reads retried), the same with retries off, and one of each.
- crash: 8 writers add products; every replica of the app is killed with SIGKILL right after;
  after the restart, every acknowledged product is looked for.
- soak: ``--soak-minutes`` of moderate load (4 clients) with product changes mixed in; memory (RSS)
  of every process of the app at the start and the end, and errors.

Usage (after `firstlight demo`, and with the reranker trained: `firstlight train-reranker`):
    python benchmarks/reliability/bench_reliability.py --part all
    python benchmarks/reliability/bench_reliability.py --part soak --soak-minutes 10
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.reliability.chaos import (  # noqa: E402
    LoadRecord,
    kill_one,
    replica_pids,
    run_load,
    wait_for_replicas,
)
from benchmarks.reliability.fuzz_api import fuzz  # noqa: E402
from benchmarks.report import update_section  # noqa: E402
from common.paths import default_workdir  # noqa: E402

TOKEN = "bench-admin-token"
DEPLOYMENTS = ("Encoder", "Retriever", "Reranker", "Gateway")
# the production shape (serve/config.yaml) on 2 cores: two replicas of everything, CPUs shared
PRODUCTION = {"encoder.min_replicas": 2, "encoder.max_replicas": 2, "reranker.min_replicas": 2,
              "reranker.max_replicas": 2, "retriever.min_replicas": 2, "retriever.max_replicas": 2,
              "gateway.min_replicas": 2, "gateway.max_replicas": 2, "encoder.num_cpus": 0.3, "reranker.num_cpus": 0.3,
              "retriever.num_cpus": 0.2, "gateway.num_cpus": 0.1}
LAPTOP = {"encoder.min_replicas": 1, "encoder.max_replicas": 1, "reranker.min_replicas": 1, "reranker.max_replicas": 1,
          "retriever.min_replicas": 1, "retriever.max_replicas": 1, "gateway.min_replicas": 1,
          "gateway.max_replicas": 1, "encoder.num_cpus": 0.5, "reranker.num_cpus": 0.5, "retriever.num_cpus": 0.3,
          "gateway.num_cpus": 0.2}


def wait_ready(url: str, timeout_s: float = 300) -> float:
    start = time.time()
    while time.time() - start < timeout_s:
        try:
            if requests.get(url + "/readyz", timeout=20).status_code == 200:
                return time.time() - start
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} was not ready in {timeout_s}s")


@contextmanager
def app(root: Path, state: Path, port: int, **settings):
    from ray import serve

    from serve.app import build_app
    from serve.config import ServeConfig

    token = state / "token"
    state.mkdir(parents=True, exist_ok=True)
    token.write_text(TOKEN)
    cfg = ServeConfig.from_args({"index_dir": str(root / "index"), "state_dir": str(state / "serve_state"), "admin_token_file": str(token), "rerank.model": str(root / "reranker" / "model"), "port": port, **settings})
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(cfg), name="firstlight", route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    wait_ready(url)
    try:
        yield url, cfg
    finally:
        serve.delete("firstlight")


def queries(root: Path, n: int = 200) -> list[dict]:
    from data_pipeline.prepare import load_split

    return [{"text": q, "k": 10} for q in sorted(load_split(root / "data", "test")["query"].unique())[:n]]


# -- parts ---------------------------------------------------------------------------------------
def part_fuzz(root: Path, scratch: Path, port: int, examples: int) -> dict:
    with app(root, scratch / "fuzz", port, **LAPTOP) as (url, _):
        runs = {who: fuzz(url, token, examples, scratch / "fuzz" / "reports")
                for who, token in (("anonymous", None), ("admin", TOKEN))}
    for run in runs.values():
        print(run["summary"], flush=True)
    rows = "\n".join(f"| {who} | {r['requests']} | {r['server_errors']} | {'pass' if r['passed'] else 'FAIL'} | "
                     f"{', '.join(f'{s}: {n}' for s, n in r['statuses'].items())} |" for who, r in runs.items())
    total = sum(r["requests"] for r in runs.values())
    update_section("reliability-fuzz", "Reliability: API fuzzing (schemathesis)",
                   f"python benchmarks/reliability/bench_reliability.py --part fuzz --examples {examples}", f"""
schemathesis {_version('schemathesis')} over the served OpenAPI document (full Home Depot index, reranker on),
every route, at most {examples} cases per route and phase (coverage, fuzzing, stateful), seed 1. Checks: no 5xx,
statuses / bodies / content types as documented, schema-violating input refused with a 4xx, 405 with Allow,
admin routes refusing callers without the token.

| caller | requests | 5xx | checks | statuses |
|---|---|---|---|---|
{rows}

**{total} requests, {sum(r['server_errors'] for r in runs.values())} server errors.**
""")
    return runs


def _kill_round(url: str, bodies: list[dict], deployment: str, clients: int, before_s: float, after_s: float,
                retry_5xx: bool = False) -> dict:
    record, stop = LoadRecord(), threading.Event()
    threads = run_load(url, bodies, clients, stop, record, retry_5xx=retry_5xx)
    time.sleep(before_s)
    killed_at = time.time()
    kill_one(deployment)
    time.sleep(after_s)
    stop.set()
    for thread in threads:
        thread.join()
    before, after = record.summary(until=killed_at), record.summary(since=killed_at)
    return {"deployment": deployment, "p99_before_ms": before["p99_ms"], **after}


def part_kill(root: Path, scratch: Path, port: int, clients: int, before_s: float, after_s: float) -> dict:
    bodies = queries(root)
    setups = [("production: 2 of each, reads retried", PRODUCTION, {}),
              ("production, retries off", PRODUCTION, {"retries": 0}),
              ("laptop default: 1 of each", LAPTOP, {})]
    results = {}
    for name, shape, extra in setups:
        with app(root, scratch / "kill", port, **shape, **extra) as (url, _):
            rows = []
            for deployment in DEPLOYMENTS:
                wanted = 2 if shape is PRODUCTION else 1
                for d in DEPLOYMENTS:
                    wait_for_replicas(d, wanted)
                wait_ready(url)
                time.sleep(3)
                rows.append(_kill_round(url, bodies, deployment, clients, before_s, after_s))
                print(name, rows[-1], flush=True)
                if deployment == "Gateway" and shape is PRODUCTION and not extra:
                    wait_for_replicas("Gateway", 2)
                    wait_ready(url)
                    time.sleep(3)
                    rows.append({**_kill_round(url, bodies, deployment, clients, before_s, after_s, retry_5xx=True),
                                 "deployment": "Gateway (client retries a 5xx once)"})
                    print(name, rows[-1], flush=True)
            results[name] = rows
    lines = []
    for name, rows in results.items():
        for r in rows:
            lines.append(f"| {name} | {r['deployment']} | {r['requests']} | {r['failed']} ({r['failed_pct']}%) | "
                         f"{r['longest_stall_ms']:.0f} | {r['p99_before_ms']} |")
    update_section("reliability-kill", "Reliability: losing a replica under load",
                   f"python benchmarks/reliability/bench_reliability.py --part kill --clients {clients}", f"""
{clients} closed-loop HTTP clients on {len(bodies)} real Home Depot test queries (k=10, hybrid + reranker, full index).
After {before_s:.0f} s one replica of the named deployment is killed with SIGKILL; requests answered (or failed) in the {after_s:.0f} s
from the kill on are counted. *Stall*: the longest time from the kill on with no successful answer, to compare with
the p99 latency before the kill. Targets: under 0.1% failed, no stall longer than that p99.

| configuration | killed | requests | failed | longest stall (ms) | p99 before (ms) |
|---|---|---|---|---|---|
{chr(10).join(lines)}

A Gateway replica holds the HTTP requests it is answering: the Serve proxy answers those with a 5xx when it dies,
and nothing behind it can retry them. A load balancer that retries a failed POST /v1/recommend once (it is a
read) hides them; the row "client retries a 5xx once" measures that. A lost Reranker never fails a request (the
gateway answers with the first-stage ranking and says so) but costs those replies their reranking; retried, they
keep it. With about 600 requests a window, one failure is 0.17%: under 0.1% here means none.
""", raw=results)
    return results


def part_crash(root: Path, scratch: Path, port: int, writers: int, per_writer: int) -> dict:
    from ray import serve

    from serve.app import build_app

    acknowledged: list[str] = []
    lock = threading.Lock()
    with app(root, scratch / "crash", port, **LAPTOP) as (url, cfg):
        def writer(n: int) -> None:
            session = requests.Session()
            for i in range(per_writer):
                item = {"id": f"crash-{n}-{i}", "title": f"Crash test lantern model {n} {i}"}
                reply = session.post(url + "/v1/items", json={"items": [item]}, timeout=60,
                                     headers={"Authorization": f"Bearer {TOKEN}"})
                if reply.status_code == 200:
                    with lock:
                        acknowledged.append(item["id"])

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(writers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        killed = [pid for d in DEPLOYMENTS for pid in replica_pids(d)]
        killed_at = time.time()
        for pid in killed:  # the whole app at once, right after the last acknowledgement
            os.kill(pid, 9)
        serve.delete("firstlight")
        serve.run(build_app(cfg), name="firstlight", route_prefix="/")
        wait_ready(url)
        restart_s = time.time() - killed_at
        found = set()
        for item_id in acknowledged:
            n, i = item_id.split("-")[1:]
            reply = requests.post(url + "/v1/recommend", timeout=60,
                                  json={"text": f"crash test lantern model {n} {i}", "k": 30, "rerank": False})
            found |= {hit["id"] for hit in reply.json()["items"]}
    lost = sorted(set(acknowledged) - found)
    result = {"written": writers * per_writer, "acknowledged": len(acknowledged), "lost": len(lost),
              "killed_processes": len(killed), "restart_s": round(restart_s, 1)}
    update_section("reliability-crash", "Reliability: kill -9 after acknowledged changes",
                   f"python benchmarks/reliability/bench_reliability.py --part crash --writers {writers}", f"""
{writers} concurrent writers each add {per_writer} products (one per POST /v1/items); right after the last
acknowledgement every replica of the app ({len(killed)} processes) is killed with SIGKILL, and the app is deployed
again on the same state. Each acknowledged product is then searched for by its title.

| products written | acknowledged | lost after kill -9 | ready again after (kill to /readyz 200) |
|---|---|---|---|
| {result['written']} | {result['acknowledged']} | **{result['lost']}** | {result['restart_s']} s |
""", raw=result)
    return result


def app_processes() -> dict[str, int]:
    from ray.util.state import list_actors

    names = {}
    for actor in list_actors(filters=[("state", "=", "ALIVE")], raise_on_missing_output=False):
        if actor.class_name.startswith("ServeReplica:firstlight:") or actor.class_name in ("ProxyActor",
                                                                                          "ServeController"):
            label = actor.class_name.split(":")[-1]
            names[f"{label} {sum(1 for k in names if k.startswith(label)) + 1}"] = actor.pid
    return names


def rss_mb(pids: dict[str, int]) -> dict[str, float]:
    import psutil

    out = {}
    for name, pid in pids.items():
        try:
            out[name] = round(psutil.Process(pid).memory_info().rss / 2**20, 1)
        except psutil.NoSuchProcess:
            out[name] = float("nan")
    return out


def part_soak(root: Path, scratch: Path, port: int, minutes: float, clients: int) -> dict:
    bodies = queries(root, 500)
    with app(root, scratch / "soak", port, **LAPTOP) as (url, _):
        for body in bodies[:50]:  # warm every path (tokenizers, spelling, first batches) before measuring
            requests.post(url + "/v1/recommend", json=body, timeout=60)
        pids = app_processes()
        samples = [(0.0, rss_mb(pids))]
        record, stop = LoadRecord(), threading.Event()
        changes = {"ok": 0, "failed": 0}

        def changer() -> None:  # a merchandiser: add a product, then delete it again, about once a second
            session, n = requests.Session(), 0
            headers = {"Authorization": f"Bearer {TOKEN}"}
            while not stop.is_set():
                pid = f"soak-{n % 50}"
                add = session.post(url + "/v1/items", headers=headers, timeout=60,
                                   json={"items": [{"id": pid, "title": f"Soak test birdhouse {n}"}]})
                gone = session.delete(f"{url}/v1/items/{pid}", headers=headers, timeout=60)
                for reply in (add, gone):
                    changes["ok" if reply.status_code == 200 else "failed"] += 1
                n += 1
                stop.wait(1.0)

        threads = run_load(url, bodies, clients, stop, record) + [threading.Thread(target=changer, daemon=True)]
        threads[-1].start()
        start = time.time()
        while time.time() - start < 60 * minutes:
            time.sleep(min(60, 60 * minutes - (time.time() - start)))
            samples.append((round((time.time() - start) / 60, 1), rss_mb(pids)))
            print(samples[-1], flush=True)
        stop.set()
        for thread in threads:
            thread.join()
        summary = record.summary()
    first, half, last = samples[min(1, len(samples) - 1)][1], samples[len(samples) // 2][1], samples[-1][1]
    rows = "\n".join(f"| {name} | {samples[0][1][name]} | {first[name]} | {half[name]} | {last[name]} | "
                     f"{last[name] - half[name]:+.1f} |" for name in pids)
    result = {"minutes": minutes, "requests": summary["requests"], "failed": summary["failed"],
              "p99_ms": summary["p99_ms"], "changes": changes, "rss_mb": samples}
    update_section("reliability-soak", "Reliability: soak", f"python benchmarks/reliability/bench_reliability.py --part soak "
                   f"--soak-minutes {minutes:g}", f"""
{minutes:g} minutes of {clients} closed-loop clients on {len(bodies)} real Home Depot test queries (hybrid + reranker,
one replica of each deployment), with a product added and deleted about once a second throughout. Memory is the
resident set (MB) of each process of the app after warm-up, after the first minute, half way and at the end.

| process | after warm-up | after 1 min | half way | at the end | change in the second half |
|---|---|---|---|---|---|
{rows}

**{summary['requests']} requests, {summary['failed']} failed** (p99 {summary['p99_ms']} ms); product changes:
{changes['ok']} answered 200, {changes['failed']} not.
""", raw=result)
    return result


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("fuzz", "kill", "crash", "soak", "all"), default="all")
    parser.add_argument("--workdir", default=str(default_workdir() / "homedepot"))
    parser.add_argument("--examples", type=int, default=100, help="fuzz: cases per route and phase")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--before-s", type=float, default=10)
    parser.add_argument("--after-s", type=float, default=30)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--per-writer", type=int, default=25)
    parser.add_argument("--soak-minutes", type=float, default=10)
    parser.add_argument("--port", type=int, default=8017)
    args = parser.parse_args(argv)

    from common.runtime import ensure_ray, setup_logging

    setup_logging()
    root = Path(args.workdir)
    for needed in (root / "index" / "index.faiss", root / "reranker" / "model" / "config.json"):
        if not needed.exists():
            raise SystemExit(f"{needed} is missing: run `firstlight demo` and `firstlight train-reranker` first")
    ensure_ray(num_cpus=os.cpu_count())
    scratch = Path(tempfile.mkdtemp(prefix="firstlight-reliability-"))
    try:
        parts = ("fuzz", "kill", "crash") if args.part == "all" else (args.part,)
        for part in parts:
            if part == "fuzz":
                part_fuzz(root, scratch, args.port, args.examples)
            elif part == "kill":
                part_kill(root, scratch, args.port, args.clients, args.before_s, args.after_s)
            elif part == "crash":
                part_crash(root, scratch, args.port, args.writers, args.per_writer)
            else:
                part_soak(root, scratch, args.port, args.soak_minutes, clients=4)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps({"done": parts}))


if __name__ == "__main__":
    main()
