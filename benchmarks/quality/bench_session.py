"""Offline measure of first-click personalisation on Home Depot (ranking/session.py).

For every query of a split with two or more relevant products, one relevant product (seeded choice)
is revealed as the visitor's click; the ranking of the *other* products is scored (nDCG@10 on the
graded labels, Recall@100 on the relevant ones, the clicked product removed from both the judgments
and the rankings) for:
- no click: the served first stage (hybrid BM25 + encoder), the clicked product excluded;
- click: the same with the query vector moved toward the clicked product's (Rocchio, weight tuned on
  val from WEIGHTS);
- more like the clicked item: the encoder's neighbours of the clicked product alone.
Paired bootstrap (evaluation/compare.py) of click and more-like-this against no click, on test.

Usage (after `firstlight demo`): python benchmarks/quality/bench_session.py
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.report import results_file, update_section  # noqa: E402
from common.paths import default_workdir  # noqa: E402

WEIGHTS = (0.25, 0.5, 1.0, 2.0, 4.0)


def clicked_split(prepared: Path, split: str, seed: int = 0):
    """(judgments without the clicked product, {query: clicked product}) for queries with >= 2 relevant."""
    from data_pipeline.prepare import load_split
    from evaluation.metrics import Judged, judged_from_frame

    judged = judged_from_frame(load_split(prepared, split))
    rng = np.random.default_rng(seed)
    clicks = {q: str(rng.choice(sorted(judged.binary[q]))) for q in judged.queries if len(judged.binary[q]) >= 2}
    rest = Judged(graded={q: {p: g for p, g in judged.graded[q].items() if p != c} for q, c in clicks.items()},
                  binary={q: {p: 1 for p in judged.binary[q] if p != c} for q, c in clicks.items()},
                  candidates={q: [p for p in judged.candidates[q] if p != c] for q, c in clicks.items()})
    return rest, clicks


def runs(ranker, stage, clicks: dict, weights) -> dict:
    """{system: {query: {product: score}}} for no click, each click weight, and more-like-this."""
    from ranking.hybrid import HybridIndex
    from ranking.session import personalised

    queries = sorted(clicks)
    texts = ranker.corrected(queries)
    vectors = ranker.encoder.encode(texts, batch_size=128, role="query")
    known = ranker.hybrid.vectors_of(set(clicks.values()))
    clicked = [known[clicks[q]][None, :] for q in queries]
    exclude = [{clicks[q]} for q in queries]
    out = {}

    def fused(query_vectors) -> dict:
        dense, lexical = ranker.hybrid.sides(query_vectors, texts, stage, exclude)
        return dict(zip(queries, HybridIndex.fused(dense, lexical, stage)))

    out["no click"] = fused(vectors)
    for w in weights:
        out[f"click (weight {w:g})"] = fused(personalised(vectors, clicked, w))
    out["more like the clicked item"] = dict(zip(queries, ranker.hybrid.dense_side(
        np.concatenate(clicked), stage.depth, exclude)))
    return out


def table_rows(scored: dict, base: str, raw: dict | None = None) -> list[str]:
    """One markdown row per system: each metric's mean, and for all but ``base`` its difference from
    ``base`` with the 95% paired bootstrap interval (also put in ``raw``, by system and metric)."""
    from evaluation.compare import paired_bootstrap

    lines = []
    for name, metrics in scored.items():
        cells = []
        for m in ("ndcg@10", "recall@100", "mrr@10"):
            mean = float(np.mean(metrics[m]))
            if name == base:
                cells.append(f"{mean:.3f}")
                continue
            ci = paired_bootstrap(metrics[m], scored[base][m])
            if raw is not None:
                raw[f"{name} {m}"] = ci
            cells.append(f"{mean:.3f} ({ci['mean_diff']:+.3f} [{ci['ci_low']:+.3f}, {ci['ci_high']:+.3f}])")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default=str(default_workdir() / "homedepot"))
    parser.add_argument("--index-dir", default=None, help="default WORKDIR/index (the served default)")
    args = parser.parse_args(argv)

    from evaluation.metrics import evaluate_run
    from ranking.hybrid import FirstStage
    from ranking.offline import OfflineRanker

    root = Path(args.workdir)
    index_dir = args.index_dir or str(root / "index")
    ranker = OfflineRanker(str(root / "data"), index_dir)
    stage = FirstStage()

    val, val_clicks = clicked_split(root / "data", "val")
    val_runs = runs(ranker, stage, val_clicks, WEIGHTS)
    val_scores = {name: evaluate_run(run, val) for name, run in val_runs.items()}
    best = max(WEIGHTS, key=lambda w: val_scores[f"click (weight {w:g})"]["ndcg@10"])
    print(json.dumps({"val": val_scores, "best_weight": best}, indent=1), flush=True)

    test, test_clicks = clicked_split(root / "data", "test")
    test_runs = runs(ranker, stage, test_clicks, (best,))
    systems = {"no click": test_runs["no click"], f"click (weight {best:g}, tuned on val)":
               test_runs[f"click (weight {best:g})"], "more like the clicked item": test_runs["more like the clicked item"]}
    scored = {name: evaluate_run(run, test, per_query=True) for name, run in systems.items()}
    lines = table_rows(scored, "no click")
    val_line = ", ".join(f"{w:g}: {val_scores[f'click (weight {w:g})']['ndcg@10']:.3f}" for w in WEIGHTS)
    update_section("session-clicks", "Session personalisation: one click", "python benchmarks/quality/bench_session.py", f"""
Home Depot, {Path(index_dir).name} ({ranker.model}), the served first stage (hybrid BM25 + encoder). Queries with two or
more relevant products: {len(val_clicks)} val, {len(test_clicks)} test. One relevant product per query (seeded) is the
click; the other products are scored, the clicked one removed from judgments and rankings. Click = the query vector
moved toward the clicked product's (Rocchio) before the hybrid first stage. Brackets: mean difference from no click
with its 95% paired bootstrap interval.

| test | nDCG@10 | Recall@100 | MRR@10 |
|---|---|---|---|
{chr(10).join(lines)}

Click weight tuned on val by nDCG@10 (no click {val_scores['no click']['ndcg@10']:.3f}): {val_line}; chosen {best:g}.
""", raw={"val": val_scores, "best_weight": best})
    print(f"wrote {results_file()}")


if __name__ == "__main__":
    main()
