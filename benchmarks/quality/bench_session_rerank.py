"""Tunes, then measures, the session-aware second stage on the served default (ranking/rerank.py).

As bench_session.py: for each query with two or more relevant products one (seeded) is the click, and
the others are scored with the clicked one removed. Here the whole served pipeline ranks: the hybrid
first stage (the query vector moved toward the click for "click"), then the cross-encoder over the
top ``rerank.depth`` blended with weight ``rerank.weight``. Two ways to keep the click's effect
through the second stage are swept on val: the blend's reranker weight when a click is present, and
``click_weight`` (the candidate's cosine to the clicked product added to the blend). The best on val
is then measured on test against no click, and against today's click (text-only second stage).

Usage (after `firstlight demo --finetune true` and `firstlight train-reranker`):

    python benchmarks/quality/bench_session_rerank.py
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.quality.bench_session import clicked_split, table_rows  # noqa: E402
from benchmarks.report import update_section  # noqa: E402
from benchmarks.speed.bench_serve import wait_ready  # noqa: E402
from common.paths import default_workdir  # noqa: E402

BLEND_WEIGHTS = (0.6, 0.4, 0.2, 0.0)  # the reranker's share when a click is present (0.6 = as without)
CLICK_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0)
SESSION_WEIGHT = 0.5  # the served Rocchio weight (serve/config.py)


def candidates(ranker, stage, clicks: dict, depth: int, with_click: bool, session_weight: float = SESSION_WEIGHT
               ) -> dict:
    """{query: first-stage hits} with the click excluded, and moving the query vector when ``with_click``."""
    queries = sorted(clicks)
    texts = ranker.corrected(queries)
    vectors = ranker.encoder.encode(texts, batch_size=128, role="query")
    hits = ranker.hybrid.search(vectors, texts, max(depth, 100), stage, exclude=[{clicks[q]} for q in queries],
                                clicked=[[clicks[q]] for q in queries] if with_click else None,
                                session_weight=session_weight)
    out = dict(zip(queries, zip(texts, hits)))
    if with_click:
        click_likeness(ranker, out, clicks)
    return out


def scored(reranker, lists: dict, depth: int) -> dict:
    """{query: reranker scores of its top ``depth``}, all pairs in large batches."""
    pairs = [(q, text, hit["text"]) for q, (text, hits) in lists.items() for hit in hits[:depth]]
    scores = reranker.score_pairs([t for _, t, _ in pairs], [p for _, _, p in pairs], batch_size=128)
    out, at = {}, 0
    for q, (_, hits) in lists.items():
        n = min(depth, len(hits))
        out[q] = scores[at:at + n]
        at += n
    return out


def with_clicks(hits: list[dict], scores, depth: int, weight: float, click_weight: float) -> list[dict]:
    """The served blend (ranking.rerank.rerank) plus ``click_weight`` x each candidate's min-max
    normalised cosine to the clicked product: the session-aware term this bench measured (and that
    was not kept: benchmarks/RESULTS.md, "Tried and removed")."""
    from ranking.rerank import rerank

    ranked = rerank(hits, scores, depth, weight)
    if click_weight <= 0 or not all(h.get("click_sim") is not None for h in ranked[:depth]):
        return ranked
    head = ranked[:depth]
    sims = np.array([h["click_sim"] for h in head])
    blend = np.array([h["score"] for h in head])
    norm = lambda x: (x - x.min()) / max(float(x.max() - x.min()), 1e-9)  # noqa: E731
    final = norm(blend) + click_weight * norm(sims)
    return [head[i] for i in np.argsort(-final, kind="stable")] + ranked[depth:]


def click_likeness(ranker, lists: dict, clicks: dict) -> None:
    """Each candidate's cosine to its query's clicked product, as ``click_sim``."""
    for q, (_, hits) in lists.items():
        vectors = ranker.hybrid.vectors_of({clicks[q], *(h["id"] for h in hits)})
        for h in hits:
            h["click_sim"] = float(vectors[h["id"]] @ vectors[clicks[q]]) if h["id"] in vectors else None


def run_of(lists: dict, scores: dict, depth: int, weight: float, click_weight: float) -> dict:
    from ranking.rerank import as_run

    return {q: as_run(with_clicks(hits, scores[q], depth, weight, click_weight)) for q, (_, hits) in lists.items()}


def http_gain(root: Path, index_dir: str, reranker_dir: str, settings: dict, port: int) -> dict:
    """One click's gain through HTTP on a running server with ``settings``: per test query, the other
    relevant products' nDCG@10 without the click (it excluded) and with it (session.clicked)."""
    import requests
    from ray import serve

    from evaluation.metrics import evaluate_run
    from serve.app import run_serve
    from serve.config import ServeConfig

    judged, clicks = clicked_split(root / "data", "test")
    cfg = ServeConfig.from_args({"index_dir": index_dir, "rerank.model": reranker_dir, "port": port,
                                 "events.log": False, **settings})
    url = run_serve(cfg, blocking=False)
    try:
        wait_ready(url, 600, "/readyz")
        runs = {"no click": {}, "click": {}}
        with requests.Session() as http:
            for query, click in sorted(clicks.items()):
                for name, body in (("no click", {"exclude": [click]}), ("click", {"session": {"clicked": [click]}})):
                    reply = http.post(url + "/v1/recommend", json={"text": query, "k": 10, **body}, timeout=60).json()
                    runs[name][query] = {item["id"]: 10.0 - i for i, item in enumerate(reply["items"])}
    finally:
        serve.shutdown()
    per = {name: evaluate_run(run, judged, per_query=True) for name, run in runs.items()}
    return {name: float(np.mean(p["ndcg@10"])) for name, p in per.items()} | {"per_query": per}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default=str(default_workdir() / "homedepot"))
    parser.add_argument("--index-dir", default=None, help="default WORKDIR/finetuned/index (the served default)")
    parser.add_argument("--reranker", default=None, help="default WORKDIR/reranker/model")
    parser.add_argument("--http", action="store_true", help="also measure through HTTP, before and after")
    parser.add_argument("--session-weights", default=None,
                        help="instead: sweep the Rocchio weight (e.g. 0.5,1,2) with click_weight on val, own section")
    args = parser.parse_args(argv)

    from evaluation.compare import paired_bootstrap
    from evaluation.metrics import evaluate_run
    from model.reranker import Reranker
    from ranking.hybrid import FirstStage
    from ranking.offline import OfflineRanker
    from ranking.rerank import RerankStage

    root = Path(args.workdir)
    index_dir = args.index_dir or str(root / "finetuned" / "index")
    reranker_dir = args.reranker or str(root / "reranker" / "model")
    ranker = OfflineRanker(str(root / "data"), index_dir)
    reranker = Reranker.load(reranker_dir)
    stage, served = FirstStage(), RerankStage()
    depth = served.depth

    def lists_and_scores(split: str):
        judged, clicks = clicked_split(root / "data", split)
        plain, moved = candidates(ranker, stage, clicks, depth, False), candidates(ranker, stage, clicks, depth, True)
        return judged, clicks, plain, scored(reranker, plain, depth), moved, scored(reranker, moved, depth)

    if args.session_weights:
        judged, clicks = clicked_split(root / "data", "val")
        plain = candidates(ranker, stage, clicks, depth, False)
        none = evaluate_run(run_of(plain, scored(reranker, plain, depth), depth, served.weight, 0.0), judged)["ndcg@10"]
        rows, raw = [], {"val_no_click": none}
        for sw in (float(x) for x in args.session_weights.split(",")):
            moved = candidates(ranker, stage, clicks, depth, True, sw)
            moved_s = scored(reranker, moved, depth)
            cells = {c: evaluate_run(run_of(moved, moved_s, depth, served.weight, c), judged)["ndcg@10"]
                     for c in CLICK_WEIGHTS}
            raw[str(sw)] = cells
            rows.append(f"| {sw:g} | " + " | ".join(f"{v:.3f} ({v - none:+.3f})" for v in cells.values()) + " |")
            print(sw, cells, flush=True)
        update_section("session-rerank-sweep", "Session-aware second stage: the click's Rocchio weight, swept",
                       "python benchmarks/quality/bench_session_rerank.py --session-weights " + args.session_weights, f"""
Val ({len(clicks)} queries), the served default as above; nDCG@10 with one click (in brackets: the gain over no click,
{none:.3f}), by the Rocchio weight that moves the query vector (rows) and `rerank.click_weight` (columns
{", ".join(f"{c:g}" for c in CLICK_WEIGHTS)}), the reranker's blend weight {served.weight:g}.

| Rocchio weight | {" | ".join(f"{c:g}" for c in CLICK_WEIGHTS)} |
|---|{"---|" * len(CLICK_WEIGHTS)}
{chr(10).join(rows)}
""", raw=raw)
        return
    val, val_clicks, val_plain, val_plain_s, val_moved, val_moved_s = lists_and_scores("val")
    grid = {(w, c): evaluate_run(run_of(val_moved, val_moved_s, depth, w, c), val)["ndcg@10"]
            for w, c in itertools.product(BLEND_WEIGHTS, CLICK_WEIGHTS)}
    val_none = evaluate_run(run_of(val_plain, val_plain_s, depth, served.weight, 0.0), val)["ndcg@10"]
    best = max(grid, key=grid.get)
    print(json.dumps({"val_no_click": val_none, "grid": {f"{w}/{c}": v for (w, c), v in grid.items()},
                      "best": best}, indent=1), flush=True)

    test, test_clicks, plain, plain_s, moved, moved_s = lists_and_scores("test")
    systems = {"no click": run_of(plain, plain_s, depth, served.weight, 0.0),
               f"click, text-only second stage (weight {served.weight:g})": run_of(moved, moved_s, depth,
                                                                                     served.weight, 0.0),
               f"click, session-aware second stage (weight {best[0]:g}, click_weight {best[1]:g})":
                   run_of(moved, moved_s, depth, *best)}
    per = {name: evaluate_run(run, test, per_query=True) for name, run in systems.items()}
    raw = {"val_grid": {f"{w}/{c}": v for (w, c), v in grid.items()}, "val_no_click": val_none, "best": list(best)}
    lines = table_rows(per, "no click", raw)
    http_part = ""
    if args.http:
        from common.runtime import ensure_ray

        ensure_ray(num_cpus=2)
        before = http_gain(root, index_dir, reranker_dir, {}, 8141)
        gains = {}
        for name, res in (("before", before),):
            ci = paired_bootstrap(res["per_query"]["click"]["ndcg@10"], res["per_query"]["no click"]["ndcg@10"])
            gains[name] = ci
            raw[f"http {name}"] = {"no click": res["no click"], "click": res["click"], "gain": ci}
        http_part = f"""
**Through HTTP** on the served default (`firstlight serve` with the reranker; {len(test_clicks)} test queries, k 10,
the click sent as `session.clicked`, the clicked product excluded from the no-click request): one click's nDCG@10
gain: {before['no click']:.3f} -> {before['click']:.3f}
(**{gains['before']['mean_diff']:+.3f}** [{gains['before']['ci_low']:+.3f}, {gains['before']['ci_high']:+.3f}]).
"""
    table = "\n".join(f"| {w:g} | " + " | ".join(f"{grid[(w, c)]:.3f}" for c in CLICK_WEIGHTS) + " |"
                      for w in BLEND_WEIGHTS)
    update_section("session-rerank", "Session-aware second stage: one click through the reranker",
                   "python benchmarks/quality/bench_session_rerank.py", f"""
Home Depot, the served default: hybrid first stage over {Path(index_dir).parent.name}/{Path(index_dir).name}, the
cross-encoder over the top {depth} blended at weight {served.weight:g}. Queries with two or more relevant products:
{len(val_clicks)} val, {len(test_clicks)} test; one relevant product (seeded) is the click, the others are scored
with it removed. The click moves the query vector (Rocchio, weight {SESSION_WEIGHT:g}); the second stage then either
reads the text alone (today) or keeps the click: the blend's reranker weight when a click is present, and
`rerank.click_weight` (each candidate's cosine to the clicked product, min-max normalised, added to the blend),
both swept on val. Brackets: difference from no click, 95% paired bootstrap.

| test | nDCG@10 | Recall@100 | MRR@10 |
|---|---|---|---|
{chr(10).join(lines)}

Val nDCG@10 with a click (no click: {val_none:.3f}), reranker weight (rows) by click_weight (columns
{", ".join(f"{c:g}" for c in CLICK_WEIGHTS)}):

| reranker weight | {" | ".join(f"{c:g}" for c in CLICK_WEIGHTS)} |
|---|{"---|" * len(CLICK_WEIGHTS)}
{table}
{http_part}""", raw=raw)


if __name__ == "__main__":
    main()
