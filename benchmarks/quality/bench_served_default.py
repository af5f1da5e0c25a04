"""Quality of the served default ranking path (`serve/config.py`'s defaults: hybrid first stage,
reranker blended at its default depth), computed by `firstlight evaluate` itself, on both yardsticks:
the test split's crowd labels and the densely judged pool plus its blind-graded supplement
(`benchmarks/results/pool_supplement.csv`). Paired bootstraps against the encoder alone and the
first stage alone.

    python benchmarks/quality/bench_served_default.py --reranker artifacts/homedepot/reranker/model
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.quality.pool_unjudged import SUPPLEMENT  # noqa: E402
from benchmarks.report import update_section  # noqa: E402
from common.paths import default_homedepot_dir, default_workdir  # noqa: E402
from ranking.rerank import RerankStage  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default=str(default_workdir() / "homedepot"))
    parser.add_argument("--index-dir", default=None, help="default WORKDIR/finetuned-train/index")
    parser.add_argument("--reranker", required=True)
    args = parser.parse_args()

    import pandas as pd

    from common.runtime import setup_logging
    from evaluation.compare import paired_bootstrap
    from evaluation.evaluate import EvalConfig, run_evaluate
    from evaluation.metrics import EXTRA_METRICS, METRICS

    setup_logging()
    root = Path(args.workdir)
    index_dir = args.index_dir or str(root / "finetuned-train" / "index")
    pool = pd.read_csv(default_homedepot_dir() / "judged_pool" / "judgments.csv")
    if SUPPLEMENT.exists():
        pool = pd.concat([pool, pd.read_csv(SUPPLEMENT)[["search_term", "product_uid", "relevance"]]])
    pool_file = root / "eval" / "pool_with_supplement.csv"
    pool_file.parent.mkdir(parents=True, exist_ok=True)
    pool.to_csv(pool_file, index=False)
    common = dict(prepared_dir=str(root / "data"), index_dir=index_dir, systems=("bm25", "dense", "fusion", "rerank"),
                  rerank=RerankStage(model=args.reranker))
    results = {"test": run_evaluate(EvalConfig(**common, output=str(root / "eval" / "served_test.json")), show_table=False),
               "pool": run_evaluate(EvalConfig(**common, judgments=str(pool_file), query_column="search_term",
                                               product_id_column="product_uid",
                                               output=str(root / "eval" / "served_pool.json")), show_table=False)}
    cfg = EvalConfig(**common)
    names = {"bm25": "BM25", "dense": "fine-tuned encoder alone",
             "fusion": f"hybrid first stage (wsum, dense weight {cfg.first_stage.dense_weight})",
             "rerank": f"served default: hybrid + reranker, depth {cfg.rerank.depth}, blend {cfg.rerank.weight}"}
    cols = [*METRICS, *EXTRA_METRICS]
    body = []
    for key, title in (("test", "Test split, crowd labels"), ("pool", "Densely judged pool + supplement")):
        r = results[key]
        lines = [f"### {title} ({r['queries']} queries)\n", f"| system | {' | '.join(cols)} |", "|---" * (len(cols) + 1) + "|"]
        for system, label in names.items():
            lines.append(f"| {label} | " + " | ".join(f"{r['systems'][system]['mean'][c]:.3f}" for c in cols) + " |")
        lines.append("\nPaired bootstrap of the served default against:")
        for other in ("dense", "fusion"):
            for metric in ("ndcg@10", "mrr@10" if key == "test" else "p@10"):
                b = paired_bootstrap(r["systems"]["rerank"]["per_query"][metric], r["systems"][other]["per_query"][metric])
                lines.append(f"- {names[other]}, {metric}: {b['mean_diff']:+.3f} (95% CI {b['ci_low']:+.3f} to "
                             f"{b['ci_high']:+.3f})")
        body.append("\n".join(lines))
    body.append(f"The pool's figures count the {len(pool) - 1485 if SUPPLEMENT.exists() else 0} supplement grades "
                "(`benchmarks/results/pool_supplement.csv`); queries with no product graded 3 are left out, as "
                "everywhere in FirstLight (relevant = relevance >= 2.5).")
    update_section("served_default", "The served default ranking path (`firstlight evaluate`, both yardsticks)",
                   "python benchmarks/quality/bench_served_default.py --reranker " + args.reranker, "\n\n".join(body),
                   {k: {s: v["mean"] for s, v in r["systems"].items()} for k, r in results.items()})


if __name__ == "__main__":
    main()
