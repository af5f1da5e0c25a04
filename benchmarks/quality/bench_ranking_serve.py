"""The ranking path through HTTP: a replay check (what the endpoint returns scores exactly as
`firstlight evaluate` does) and latency per mode on this machine.

1. Replay: the served default (hybrid first stage + reranker) answers every test query (k=100,
   one request each); the replies' rankings are scored with the same metrics and compared with the
   offline evaluation of the same configuration. They must agree within 0.002.
2. Latency: p50 / p99 at 1 and 32 HTTP clients for dense only, hybrid, and hybrid + rerank at
   depths 10 / 20 / 30 / 50 (the per-request ``rerank`` switch and one deployment per depth).

    python benchmarks/quality/bench_ranking_serve.py --reranker artifacts/homedepot/reranker/model
    python benchmarks/quality/bench_ranking_serve.py --index-dir artifacts/homedepot/index --replay-only
        # no reranker: the replay check of the hybrid first stage alone
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.report import update_section  # noqa: E402
from benchmarks.speed.bench_serve import drive, free_port, wait_ready  # noqa: E402
from common.paths import default_workdir  # noqa: E402
from model.runtime import EncoderRuntime  # noqa: E402
from ranking.rerank import RerankStage  # noqa: E402


async def replay(url: str, queries: list[str], k: int, clients: int = 4) -> dict:
    """Each query's served ranking as {product: score by position}, and whether it was reranked."""
    import aiohttp

    out, reranked = {}, 0
    async with aiohttp.ClientSession() as session:
        async def ask(query):
            nonlocal reranked
            async with session.post(url + "/v1/recommend", json={"text": query, "k": k}) as reply:
                body = await reply.json()
                if reply.status != 200:
                    raise RuntimeError(f"{query!r}: HTTP {reply.status}: {body}")
                items = body["items"]
                out[query] = {it["id"]: float(len(items) - i) for i, it in enumerate(items)}
                reranked += bool(body.get("reranked"))
        for start in range(0, len(queries), clients):
            await asyncio.gather(*(ask(q) for q in queries[start:start + clients]))
    return {"run": out, "reranked": reranked}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default=str(default_workdir() / "homedepot"))
    parser.add_argument("--index-dir", default=None, help="default WORKDIR/finetuned-train/index")
    parser.add_argument("--reranker", default=None, help="absent: replay the first stage alone (with --replay-only)")
    parser.add_argument("--depth", type=int, default=10, help="the default rerank depth (replayed)")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--backend", default="auto", help="runtime.backend on both sides (fp32: the exact replay)")
    parser.add_argument("--replay-only", action="store_true", help="skip the latency table")
    args = parser.parse_args()
    if args.reranker is None and not args.replay_only:
        parser.error("the latency table compares rerank depths: pass --reranker, or --replay-only")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    system = "rerank" if args.reranker else "fusion"

    from ray import serve

    from common.runtime import ensure_ray, setup_logging
    from data_pipeline.prepare import load_split
    from evaluation.evaluate import EvalConfig, run_evaluate
    from evaluation.metrics import METRICS, evaluate_run, judged_from_frame
    from serve.app import build_app
    from serve.config import ServeConfig

    setup_logging()
    root = Path(args.workdir)
    index_dir = args.index_dir or str(root / "finetuned-train" / "index")
    judged = judged_from_frame(load_split(root / "data", "test"))
    offline_cfg = EvalConfig(prepared_dir=str(root / "data"), index_dir=index_dir,
                             systems=("fusion", "rerank") if args.reranker else ("fusion",),
                             output=str(root / "eval" / (f"replay_offline_{system}.json" if args.backend == "auto"
                                                         else f"replay_offline_{system}_{args.backend}.json")),
                             rerank=RerankStage(model=args.reranker, depth=args.depth),
                             runtime=EncoderRuntime(backend=args.backend))
    saved = Path(offline_cfg.output)
    if saved.exists() and json.loads(saved.read_text()).get("config") == json.loads(json.dumps(asdict(offline_cfg))):
        offline = json.loads(saved.read_text())  # the same settings were evaluated already
    else:
        offline = run_evaluate(offline_cfg, show_table=False)

    ensure_ray(num_cpus=os.cpu_count())
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    base = {"index_dir": index_dir, "prepared_dir": str(root / "data"), "encoder.num_cpus": 0.5,
            "retriever.num_cpus": 0.25, "gateway.num_cpus": 0.25, "reranker.num_cpus": 1, "reranker.threads": 2,
            "encoder.max_replicas": 1, "reranker.max_replicas": 1, "port": port, "runtime.backend": args.backend}
    serve.start(http_options={"host": "127.0.0.1", "port": port})

    def deploy(settings: dict):
        serve.run(build_app(ServeConfig.from_args({**base, **settings})), name="firstlight", route_prefix="/")
        wait_ready(url)

    texts = judged.queries
    # the replay checks rankings, not latency: no reply may fall back to the first stage for time
    deploy({"rerank.model": args.reranker, "rerank.depth": args.depth, "rerank.budget_ms": 600000,
            "rerank.timeout_s": 600} if args.reranker else {})
    started = time.perf_counter()
    served = asyncio.run(replay(url, texts, 100))
    replay_s = time.perf_counter() - started
    online = {system: evaluate_run(served["run"], judged)}
    rows = []
    for metric in METRICS:
        a, b = offline["systems"][system]["mean"][metric], online[system][metric]
        rows.append(f"| {metric} | {a:.4f} | {b:.4f} | {b - a:+.4f} |")

    latency = {}
    modes = [("dense only", {"first_stage.mode": "dense"}, False),
             ("hybrid", dict(), False)] + [(f"hybrid + rerank depth {d}", {"rerank.model": args.reranker, "rerank.depth": d}, True)
                                         for d in (10, 20, 30, 50)]
    for name, settings, rerank in ([] if args.replay_only else modes):
        deploy(settings)
        asyncio.run(drive(url, texts, 2, 3))  # warm-up
        latency[name] = [asyncio.run(drive(url, texts, c, args.seconds)) for c in (1, 32)]
        print(name, [(r["p50_ms"], r["p99_ms"], r["qps"]) for r in latency[name]])
    serve.shutdown()

    what = (f"the served default (hybrid first stage + reranker at depth {args.depth}, backend {args.backend} on "
            f"both sides, its latency budget lifted so that no reply falls back for time; {served['reranked']} of "
            f"{len(texts)} replies reranked)" if args.reranker else
            f"the hybrid first stage alone over {os.path.relpath(index_dir)} (no reranker; backend {args.backend} "
            "on both sides)")
    lat_rows = [f"| {name} | " + " | ".join(f"{r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['qps']:.1f}" for r in rs) +
                f" | {sum(r['errors'] for r in rs)} |" for name, rs in latency.items()]
    body = f"""
Replay: the {len(texts)} test queries sent one request each (k=100) to {what}, their
rankings scored like the offline evaluation of the same settings ({replay_s:.0f} s):

| metric | offline (`firstlight evaluate`) | online (HTTP replies) | difference |
|---|---|---|---|
{chr(10).join(rows)}

Latency through HTTP on this machine (Encoder 0.5 CPU, Reranker 1 CPU with 2 torch threads, Retriever and gateway 0.25 CPU each;
one replica each; {args.seconds:.0f} s per level; real test queries, k=10):

| mode | 1 client p50 ms | p99 ms | QPS | 32 clients p50 ms | p99 ms | QPS | errors |
|---|---|---|---|---|---|---|---|
{chr(10).join(lat_rows)}
"""
    if args.replay_only:  # a section of its own: the latency table of a full run stays
        body = body[:body.index("\nLatency through HTTP")]
        update_section(f"rerank_serve_replay_{args.backend}" + ("" if args.reranker else "_first_stage"),
                       f"Ranking path through HTTP: replay check, {args.backend}"
                       + ("" if args.reranker else ", first stage alone"),
                       f"python benchmarks/quality/bench_ranking_serve.py {'--reranker ' + args.reranker if args.reranker else '--index-dir ' + os.path.relpath(index_dir)} "
                       f"--backend {args.backend} --replay-only", body,
                       {"offline": {m: offline["systems"][system]["mean"][m] for m in METRICS}, "online": online,
                        "backend": args.backend, "depth": args.depth})
        return
    update_section("rerank_serve", "Ranking path through HTTP: replay check and latency per mode",
                   "python benchmarks/quality/bench_ranking_serve.py --reranker " + args.reranker, body,
                   {"offline": {m: offline["systems"]["rerank"]["mean"][m] for m in METRICS}, "online": online,
                    "latency": latency, "depth": args.depth})


if __name__ == "__main__":
    main()
