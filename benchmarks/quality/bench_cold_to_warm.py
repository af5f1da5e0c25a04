"""Cold to warm on Home Depot: serve the zero-shot hybrid, log simulated shoppers' clicks, train on the
log alone, and measure the test split before and after (crowd labels and the judged pool).

1. The cold server's top 10 for every training-split query (zero-shot MiniLM + BM25, the server's
   default first stage, no reranker: nothing trained on labels exists on day one).
2. Simulated sessions on those lists (benchmarks/events/clicks.py: position-based examination,
   clicks from graded relevance, 2% swapped lists as the server serves them), logged as the server
   logs them. Sizes share one seeded stream: the 2,500-session log is the first 2,500 of the 20,000.
3. `firstlight train --events LOG` from the serving model, the default recipe otherwise; the
   prepared folder it reads has no judgments (a copy with the catalogue only).
4. Each model embedded, indexed and evaluated on the test split: alone and in the hybrid.

Usage (after `firstlight demo`; about 12 minutes a trained point on 2 CPU cores):

    python benchmarks/quality/bench_cold_to_warm.py [--sessions 2500,5000,10000,20000] [--naive-at 20000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.events.clicks import run_in_process, training_queries  # noqa: E402
from benchmarks.report import update_section  # noqa: E402
from common.paths import default_workdir  # noqa: E402
from ranking.hybrid import FirstStage  # noqa: E402

POOL = Path(__file__).resolve().parents[3] / "shared" / "data" / "homedepot" / "judged_pool" / "judgments.csv"
SWAP_SHARE = 0.02


def cold_rankings(root: Path, out: Path) -> dict[str, list[str]]:
    """The cold server's top 10 per training query (cached: the costliest step after training)."""
    path = out / "cold_rankings.json"
    if path.exists():
        return json.loads(path.read_text())
    from ranking.offline import OfflineRanker

    queries, _ = training_queries(root / "data")
    ranker = OfflineRanker(str(root / "data"), str(root / "index"))
    texts, lists = ranker.candidates(queries, FirstStage(), 10)
    rankings = {q: [hit["id"] for hit in row] for q, row in zip(queries, lists)}
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rankings))
    return rankings


def simulate(root: Path, out: Path, sessions: int, seed: int) -> Path:
    folder = out / f"log-{sessions}"
    done = folder / "simulation.json"
    if done.exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    _, grades = training_queries(root / "data")
    started = time.perf_counter()
    counts = run_in_process(cold_rankings(root, out), grades, sessions, folder, seed=seed, swap_share=SWAP_SHARE)
    counts["seconds"] = round(time.perf_counter() - started, 1)
    done.write_text(json.dumps(counts))
    return folder


def catalogue_only(root: Path, out: Path) -> Path:
    """A prepared folder with the catalogue and no judgments: what a label-free run may read."""
    folder = out / "catalogue_only"
    if not (folder / "catalogue").exists():
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copytree(root / "data" / "catalogue", folder / "catalogue")
        shutil.copy(root / "data" / "manifest.json", folder / "manifest.json")
    return folder


def train_on(log: Path, prepared: Path, out: Path, correction: str, variant: str = "", settings: dict | None = None
             ) -> Path:
    from common.config import build_config
    from train.config import TrainConfig
    from train.driver import run_train

    run = out / f"run-{log.name}-{correction}{variant}"
    model = run / "model"
    if (model / "model.safetensors").exists():
        return model
    shutil.rmtree(run, ignore_errors=True)
    cfg = build_config(TrainConfig, {"prepared_dir": str(prepared), "output_dir": str(run), "events": str(log),
                                     "clicks": {"correction": correction}, **(settings or {})})
    return Path(run_train(cfg))


def evaluate(root: Path, model: Path | None, out: Path, name: str) -> dict:
    """Test-split figures on crowd labels and on the judged pool: the encoder alone and the hybrid."""
    from data_pipeline.embed import EmbedConfig, run_embed
    from data_pipeline.index import IndexConfig, run_index
    from evaluation.evaluate import EvalConfig, run_evaluate

    path = out / f"eval-{name}.json"
    if path.exists():
        return json.loads(path.read_text())
    if model is None:
        index, emb = root / "index", root / "embeddings"
    else:
        emb = run_embed(EmbedConfig(prepared_dir=str(root / "data"), output_dir=str(out / f"emb-{name}"),
                                    model=str(model.resolve())))
        index = run_index(IndexConfig(embeddings_dir=str(emb), output_dir=str(out / f"index-{name}")))
    crowd = run_evaluate(EvalConfig(prepared_dir=str(root / "data"), index_dir=str(index), embeddings_dir=str(emb),
                                    systems=("dense", "fusion"), output=str(out / f"test-{name}.json")))
    pool = run_evaluate(EvalConfig(prepared_dir=str(root / "data"), index_dir=str(index), embeddings_dir=str(emb),
                                   systems=("dense", "fusion"), judgments=str(POOL), query_column="search_term", product_id_column="product_uid",
                                   output=str(out / f"pool-{name}.json")))
    result = {f"{yard}_{system}": {m: res["systems"][system]["mean"][m] for m in ("ndcg@10", "recall@100", "mrr@10")}
              for yard, res in (("crowd", crowd), ("pool", pool)) for system in ("dense", "fusion")}
    path.write_text(json.dumps(result, indent=1))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default=str(default_workdir() / "homedepot"))
    parser.add_argument("--out", default=None, help="default WORKDIR/cold_to_warm")
    parser.add_argument("--sessions", default="2500,5000,10000,20000")
    parser.add_argument("--naive-at", type=int, default=20000, help="also train naive click-as-positive at this size")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--variants", default="{}", help='JSON {"name": {training settings}}: also trained at the '
                        'largest size, e.g. {"2 epochs": {"optim.epochs": 2}}')
    args = parser.parse_args()

    from common.runtime import ensure_ray, setup_logging

    setup_logging()
    ensure_ray()
    root = Path(args.workdir)
    out = Path(args.out) if args.out else root / "cold_to_warm"
    prepared = catalogue_only(root, out)
    sizes = [int(s) for s in args.sessions.split(",")]
    rows = {"zero-shot (the cold server's encoder)": ("-", evaluate(root, None, out, "zero-shot"), None)}
    runs = [(n, "ipw") for n in sizes] + ([(args.naive_at, "naive")] if args.naive_at else [])
    variants = json.loads(args.variants)
    runs += [(max(sizes), "ipw", name) for name in variants]
    for sessions, correction, *variant in runs:
        log = simulate(root, out, sessions, args.seed)
        name = variant[0] if variant else ""
        tag = "-" + "".join(c if c.isalnum() else "_" for c in name) if name else ""
        model = train_on(log, prepared, out, correction, tag, variants.get(name))
        summary = json.loads((log / "simulation.json").read_text())
        label = f"{sessions:,} sessions, {'bias-corrected (IPW)' if correction == 'ipw' else 'naive clicks'}" + \
            (f", {name}" if name else "")
        rows[label] = (summary["clicks"], evaluate(root, model, out, f"{sessions}-{correction}{tag}"), model)
    write_report(rows, out, sizes)


def write_report(rows: dict, out: Path, sizes: list[int]) -> None:
    zero = rows["zero-shot (the cold server's encoder)"][1]
    supervised_gain = 0.400 - zero["crowd_dense"]["ndcg@10"]  # the default recipe on all judgments (RESULTS)
    table = []
    for label, (clicks, res, model) in rows.items():
        gain = res["crowd_dense"]["ndcg@10"] - zero["crowd_dense"]["ndcg@10"]
        share = f"{gain / supervised_gain:.0%}" if model is not None else "-"
        table.append(f"| {label} | {clicks if clicks == '-' else f'{clicks:,}'} | "
                     f"{res['crowd_dense']['ndcg@10']:.3f} | {res['crowd_dense']['recall@100']:.3f} | "
                     f"{res['pool_dense']['ndcg@10']:.3f} | {res['crowd_fusion']['ndcg@10']:.3f} | "
                     f"{res['crowd_fusion']['recall@100']:.3f} | {res['pool_fusion']['ndcg@10']:.3f} | {share} |")
    raw = {label: {"clicks": clicks, **res} for label, (clicks, res, _) in rows.items()}
    body = f"""
Day one serves the zero-shot hybrid (MiniLM + BM25, no reranker); simulated shoppers
(benchmarks/events/clicks.py: examination (1/k)^1, clicks 0.05 + 0.9((r-1)/2)^2 from the crowd grade r,
unjudged products r = 2.0, {SWAP_SHARE:.0%} of lists swapped as the server swaps them) issue training-split
queries; `firstlight train --events LOG` trains MiniLM from the log alone (a prepared folder with no
judgments), the default recipe otherwise. Test split: 835 unseen queries over all 54,667 products; the
judged pool: its 53 queries with an exact match. "share" is the encoder's nDCG@10 gain over zero-shot as a
share of the supervised recipe's (0.400 on all 8,033 training queries' judgments).

| trained on | clicks | nDCG@10 | Recall@100 | pool nDCG@10 | hybrid nDCG@10 | hybrid Recall@100 | hybrid pool nDCG@10 | share of supervised gain |
|---|---|---|---|---|---|---|---|---|
{chr(10).join(table)}
"""
    update_section("cold_to_warm", "Cold to warm: learning from logged clicks (simulated shoppers)",
                   "python benchmarks/quality/bench_cold_to_warm.py", body, raw)


if __name__ == "__main__":
    main()
