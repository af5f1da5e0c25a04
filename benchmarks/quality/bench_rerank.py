"""Quality of the ranking path, stage by stage, on both yardsticks: the crowd labels of the test split
(835 queries, full catalogue) and the densely judged pool (80 test queries, every pooled top-10
product graded; shared/data/homedepot/judged_pool), plus `benchmarks/results/pool_supplement.csv`,
the products FirstLight's rankers put in their top 10 that the pool had not graded, graded blind by
the pool's guideline.

Rows: BM25, the fine-tuned encoder alone, the hybrid first stage (RRF, and the weighted sum tuned on
val), the reranker over the hybrid at depths 20/30/50/100, the reranker blended with the first stage
(weight tuned on val), and the reranker variants (loss x start weights) at depth 30. Each query's
candidates are scored once at the deepest depth and every row reuses them through the same
``ranking.rerank.rerank`` the server applies (a reranker's score of a product does not depend on the
depth). Paired bootstraps compare the reranker at ``--default-depth`` with the encoder alone and the
best fusion; the served default itself is measured by `bench_served_default.py`.

    python benchmarks/quality/bench_rerank.py --reranker artifacts/homedepot/reranker/model
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.report import update_section  # noqa: E402
from common.paths import default_homedepot_dir, default_workdir  # noqa: E402

DEPTHS = (20, 30, 50, 100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default=str(default_workdir() / "homedepot"))
    parser.add_argument("--index-dir", default=None, help="the first stage's index; default WORKDIR/finetuned-train/index")
    parser.add_argument("--reranker", required=True, help="the default reranker folder")
    parser.add_argument("--variants", default=None, help="folder of reranker variants (WORKDIR/rerankers)")
    parser.add_argument("--pool", default=str(default_homedepot_dir() / "judged_pool" / "judgments.csv"))
    parser.add_argument("--default-depth", type=int, default=30)
    args = parser.parse_args()

    import pandas as pd

    from benchmarks.quality.pool_unjudged import SUPPLEMENT
    from common.runtime import setup_logging
    from data_pipeline.prepare import load_catalogue, load_split
    from data_pipeline.readers import JudgmentSpec, read_judgments_frame
    from evaluation.compare import paired_bootstrap
    from evaluation.metrics import (
        EXTRA_METRICS,
        METRICS,
        evaluate_run,
        judged_from_frame,
        tune_fusion,
    )
    from model.reranker import Reranker
    from ranking.fusion import fuse_runs
    from ranking.hybrid import FirstStage
    from ranking.offline import OfflineRanker
    from ranking.rerank import as_run, rerank

    setup_logging()
    root = Path(args.workdir)
    prepared = root / "data"
    index_dir = args.index_dir or str(root / "finetuned-train" / "index")
    ranker = OfflineRanker(str(prepared), index_dir)
    known = frozenset(load_catalogue(prepared)["product_id"])
    pool = [read_judgments_frame(JudgmentSpec(args.pool, "search_term", "product_uid"), known)]
    if SUPPLEMENT.exists():  # products the pool did not grade, graded blind by the same guideline
        pool.append(read_judgments_frame(JudgmentSpec(str(SUPPLEMENT), "search_term", "product_uid"), known))
    sets = {"val": judged_from_frame(load_split(prepared, "val")),
            "test": judged_from_frame(load_split(prepared, "test")),
            "pool": judged_from_frame(pd.concat(pool, ignore_index=True))}
    stage = FirstStage()
    sides = {name: ranker.sides(j.queries, stage) for name, j in sets.items()}

    def base_runs(name):
        texts, _, dense, lexical = sides[name]
        q = sets[name].queries
        return dict(zip(q, dense)), dict(zip(q, lexical))

    # the first stage: the weighted sum's dense weight and rrf's k tuned on val
    val_dense, val_bm25 = base_runs("val")
    weight = tune_fusion([val_dense, val_bm25], sets["val"], "wsum", stage.depth)["weights"][0]
    rrf_k = tune_fusion([val_dense, val_bm25], sets["val"], "rrf", stage.depth)["k"]
    tuned = replace(stage, dense_weight=weight)
    first_stage = {}
    for name in ("val", "test", "pool"):
        dense, bm25 = base_runs(name)
        first_stage[name] = {"bm25": bm25, "dense": dense,
                             f"hybrid rrf (k={rrf_k} tuned on val)": fuse_runs([dense, bm25], "rrf", {"k": rrf_k}),
                             f"hybrid wsum (dense {weight:.2f} tuned on val)": fuse_runs([dense, bm25], "wsum", tuned.params,
                                                                                        stage.depth)}
    hybrid_name = f"hybrid wsum (dense {weight:.2f} tuned on val)"

    def scored(model: str, name: str, depth: int) -> tuple[list, list]:
        """Each query's hybrid candidates and the reranker's scores of the top ``depth``."""
        reranker = Reranker.load(model)
        texts = sides[name][0]
        cands = [[{"id": p, "score": s} for p, s in first_stage[name][hybrid_name][q].items()]
                 for q in sets[name].queries]
        pairs_q = [t for t, c in zip(texts, cands) for _ in c[:depth]]
        pairs_p = [ranker.hybrid.texts[x["id"]] for c in cands for x in c[:depth]]
        start = time.perf_counter()
        flat = reranker.score_pairs(pairs_q, pairs_p, batch_size=128)
        print(f"  {Path(model).parent.name} on {name}: {len(flat)} pairs in {time.perf_counter() - start:.0f}s")
        out, at = [], 0
        for c in cands:
            n = min(depth, len(c))
            out.append(flat[at:at + n])
            at += n
        return cands, out

    def reranked_run(name, cands, scores, depth, w=1.0):
        return {q: as_run(rerank(c, s[:depth], depth, w)) for q, c, s in zip(sets[name].queries, cands, scores)}

    runs = {name: dict(first_stage[name]) for name in ("test", "pool")}
    # val only tunes the blend at the default depth; test and pool are scored once at the deepest depth
    default_scores = {name: scored(args.reranker, name, args.default_depth if name == "val" else max(DEPTHS))
                      for name in ("val", "test", "pool")}
    for depth in DEPTHS:
        for name in ("test", "pool"):
            runs[name][f"+ rerank depth {depth}"] = reranked_run(name, *default_scores[name], depth)
    # a blend of the two stages' scores, its weight tuned on val at the default depth
    grid = [0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    val_scores = [evaluate_run(reranked_run("val", *default_scores["val"], args.default_depth, w), sets["val"])["ndcg@10"]
                  for w in grid]
    blend = grid[max(range(len(grid)), key=lambda i: val_scores[i])]
    for name in ("test", "pool"):
        runs[name][f"+ rerank depth {args.default_depth}, blended (reranker {blend:.1f} tuned on val)"] = \
            reranked_run(name, *default_scores[name], args.default_depth, blend)
    if args.variants:
        for folder in sorted(Path(args.variants).glob("*/model")):
            same = folder.resolve() == Path(args.reranker).resolve()  # its scores are already there
            for name in ("test", "pool"):
                cands, scores = default_scores[name] if same else scored(str(folder), name, 30)
                runs[name][f"variant {folder.parent.name}, depth 30"] = reranked_run(name, cands, scores, 30)

    def table(name):
        cols = [*METRICS, *EXTRA_METRICS]
        lines = [f"| system | {' | '.join(cols)} |", "|---" * (len(cols) + 1) + "|"]
        results = {}
        for system, run in runs[name].items():
            per_query = evaluate_run(run, sets[name], per_query=True, extra=True)
            results[system] = per_query
            lines.append(f"| {system} | " + " | ".join(f"{sum(per_query[c]) / len(per_query[c]):.3f}" for c in cols) + " |")
        return "\n".join(lines), results

    served = f"+ rerank depth {args.default_depth}"
    body, raw = [], {"dense_weight": weight, "rrf_k": rrf_k, "blend": blend, "val_blend_ndcg": dict(zip(grid, val_scores))}
    for name, title in (("test", f"Test split, crowd labels ({len(sets['test'].queries)} queries, full catalogue)"),
                        ("pool", f"Densely judged pool ({len(sets['pool'].queries)} test queries)")):
        text, results = table(name)
        raw[name] = {s: {m: sum(v) / len(v) for m, v in r.items()} for s, r in results.items()}
        compare = []
        for other in ("dense", hybrid_name):
            for metric in ("ndcg@10", "recall@100" if name == "test" else "p@10"):
                b = paired_bootstrap(results[served][metric], results[other][metric])
                compare.append(f"- {served.strip('+ ')} vs {other}, {metric}: {b['mean_diff']:+.3f} "
                               f"(95% CI {b['ci_low']:+.3f} to {b['ci_high']:+.3f})")
        body.append(f"### {title}\n\n{text}\n\nPaired bootstrap (10,000 resamples over queries):\n" + "\n".join(compare))
    body.append(f"First stage: dense weight {weight:.2f} (wsum) and RRF k={rrf_k} tuned for nDCG@10 on "
                f"{len(sets['val'].queries)} val queries; reranker blend weight {blend:.1f} tuned on val "
                f"(val nDCG@10 by weight: {', '.join(f'{w}: {v:.3f}' for w, v in zip(grid, val_scores))}).")
    write_disagreements(runs["pool"], sets["pool"], hybrid_name, served, ranker.hybrid.titles,
                        raw["pool"], Path(__file__).resolve().parents[1] / "results" / "rerank_disagreements.md")
    update_section("rerank", "Ranking path: hybrid first stage and cross-encoder reranker",
                   "python benchmarks/quality/bench_rerank.py --reranker " + args.reranker +
                   (f" --variants {args.variants}" if args.variants else ""), "\n\n".join(body), raw)
    print(json.dumps({"dense_weight": weight, "rrf_k": rrf_k, "blend": blend}))


def write_disagreements(runs: dict, judged, first: str, second: str, titles: dict, means: dict, path: Path) -> None:
    """The pool queries where the two rankings' nDCG@10 differ most (both ways), with each top 5 and
    its grades (gain 0-2; '?' = ungraded), to read what the reranker does."""
    from evaluation.metrics import evaluate_run

    a = evaluate_run(runs[first], judged, per_query=True)["ndcg@10"]
    b = evaluate_run(runs[second], judged, per_query=True)["ndcg@10"]
    order = sorted(range(len(a)), key=lambda i: b[i] - a[i])
    picked = order[:6] + order[-6:]
    lines = [f"# Where `{second}` and `{first}` disagree most (densely judged pool)\n",
             "Grades: the pool's gain (relevance - 1: 0 irrelevant, 1 partly, 2 exact); ? = not graded.\n"]
    for i in picked:
        q = judged.queries[i]
        lines.append(f"## {q!r}: nDCG@10 {a[i]:.2f} -> {b[i]:.2f}\n")
        for name in (first, second):
            top = sorted(runs[name][q].items(), key=lambda h: -h[1])[:5]
            graded = judged.graded[q]
            known = set(judged.candidates[q])
            cells = [f"{titles.get(p, p)} [{graded.get(p, 0) / 12:.1f}]" if p in known else f"{titles.get(p, p)} [?]"
                     for p, _ in top]
            lines.append(f"- {name}: " + "; ".join(cells))
        lines.append("")
    path.parent.mkdir(exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
