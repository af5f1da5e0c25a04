"""How many judged queries a shop needs, and what the catalogue alone gives (Home Depot, MiniLM).

Each point trains the default recipe, embeds the whole catalogue with the trained model, indexes it and
evaluates the test split (835 unseen queries) on the crowd labels and on the judged pool, alone and in
the hybrid:

- **label budget**: `firstlight train --data.max_queries N` (N training queries drawn at random with
  every judgment each has; one epoch, so proportionally fewer steps) with `--checkpoints.val_queries 0`,
  so the budget is every label the run reads (the last step is kept);
- **label-free**: `firstlight synthesize` (pseudo-queries from titles and attributes, kept where the
  zero-shot hybrid's sides agree) then `firstlight train --pairs synthetic` from a prepared folder with
  no judgments at all (the checkpoint picked by held-out pseudo-queries);
- **combined**: the label-free model, then each budget on top of it (`--model`).

The all-label point is the served default's fine-tuned index (`firstlight demo --finetune true`).
Paired bootstrap intervals compare 500 labels with zero-shot and with all labels. A point already
measured (its eval-*.json under OUT) is reused, so the run resumes after a crash.

    python benchmarks/quality/bench_label_budget.py [--budgets 250,500,1000,4000] [--combined 500]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.quality.bench_cold_to_warm import POOL, catalogue_only  # noqa: E402
from benchmarks.quality.pool_unjudged import SUPPLEMENT  # noqa: E402
from benchmarks.report import update_section  # noqa: E402
from common.paths import default_workdir  # noqa: E402

SYSTEMS = ("dense", "fusion")
ALL = "all labels"
RECIPE: dict = {}  # --recipe: settings every encoder run here adds (a small catalogue's batch size)


def evaluate(root: Path, out: Path, name: str, model: Path | None = None, index: Path | None = None,
             emb: Path | None = None, reranker: Path | None = None) -> dict:
    """Test-split figures (means and per-query) on crowd labels and on the judged pool; with
    ``reranker``, the served path (hybrid + reranker) as system "rerank"."""
    from data_pipeline.embed import EmbedConfig, run_embed
    from data_pipeline.index import IndexConfig, run_index
    from evaluation.evaluate import EvalConfig, run_evaluate
    from ranking.rerank import RerankStage

    path = out / f"eval-{name}.json"
    if path.exists():
        return json.loads(path.read_text())
    if model is not None:
        emb = run_embed(EmbedConfig(prepared_dir=str(root / "data"), output_dir=str(out / f"emb-{name}"),
                                    model=str(model.resolve())))
        index = run_index(IndexConfig(embeddings_dir=str(emb), output_dir=str(out / f"index-{name}")))
    result = {}
    yards = [("crowd", {})] + ([("pool", {"judgments": str(pool_judgments(out)), "query_column": "search_term",
                                          "product_id_column": "product_uid"})] if root.name == "homedepot" else [])
    for yard, extra in yards:
        systems = ("rerank",) if reranker else SYSTEMS
        if reranker:
            extra["rerank"] = RerankStage(model=str(reranker))
        res = run_evaluate(EvalConfig(prepared_dir=str(root / "data"), index_dir=str(index), embeddings_dir=str(emb),
                                      systems=systems, output=str(out / f"{yard}-{name}.json"), **extra))
        for system in systems:
            result[f"{yard}_{system}"] = {"mean": {m: res["systems"][system]["mean"][m]
                                                   for m in ("ndcg@10", "recall@100", "mrr@10")},
                                          "per_query": res["systems"][system]["per_query"]["ndcg@10"]}
    path.write_text(json.dumps(result))
    return result


def pool_judgments(out: Path) -> Path:
    """The judged pool and its blind-graded supplement (the products later rankers surfaced), as the
    served default's figures read it."""
    import pandas as pd

    pool = pd.read_csv(POOL)
    if SUPPLEMENT.exists():
        pool = pd.concat([pool, pd.read_csv(SUPPLEMENT)[["search_term", "product_uid", "relevance"]]])
    path = out / "pool_with_supplement.csv"
    pool.to_csv(path, index=False)
    return path


def train(out: Path, name: str, settings: dict) -> Path:
    from common.config import build_config
    from train.config import TrainConfig
    from train.driver import run_train

    run = out / f"run-{name}"
    if (run / "model" / "model.safetensors").exists():
        return run / "model"
    shutil.rmtree(run, ignore_errors=True)
    merged = {**RECIPE, **settings}
    for key in RECIPE.keys() & settings.keys():  # a component's settings add to the recipe's
        if isinstance(RECIPE[key], dict) and isinstance(settings[key], dict):
            merged[key] = {**RECIPE[key], **settings[key]}
    return Path(run_train(build_config(TrainConfig, {"output_dir": str(run), **merged})))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default=str(default_workdir() / "homedepot"))
    parser.add_argument("--out", default=None, help="default WORKDIR/label_budget")
    parser.add_argument("--budgets", default="250,500,1000,4000")
    parser.add_argument("--combined", default="500", help="budgets also trained on top of the label-free model")
    parser.add_argument("--synthesize", default="{}", help="JSON settings for `firstlight synthesize`")
    parser.add_argument("--variants", default="{}", help='JSON {"name": {training settings}}: other recipes for '
                        'the --combined budgets, with and without the label-free start, e.g. {"3 epochs": {"optim": '
                        '{"epochs": 3}}}')
    parser.add_argument("--recipe", default="{}", help='JSON training settings for every encoder run, e.g. '
                        '{"optim": {"batch_size": 16}} for a catalogue of a few hundred products')
    parser.add_argument("--served", default="500", help="budgets also measured as the served path (+ reranker)")
    parser.add_argument("--only", default="", help="comma-separated: budgets, synthetic, combined, served "
                        "(default all)")
    args = parser.parse_args()

    from common.runtime import ensure_ray, setup_logging
    from train.synthetic_pairs import SynthesizeConfig, run_synthesize

    setup_logging()
    ensure_ray()
    RECIPE.update(json.loads(args.recipe))
    root = Path(args.workdir)
    out = Path(args.out) if args.out else root / "label_budget"
    out.mkdir(parents=True, exist_ok=True)
    parts = set(args.only.split(",")) if args.only else {"budgets", "synthetic", "combined", "served"}
    rows = {"zero-shot": (0, evaluate(root, out, "zero-shot", index=root / "index", emb=root / "embeddings"))}
    base = json.loads((root / "index" / "manifest.json").read_text())["model"]  # the zero-shot encoder
    from data_pipeline.prepare import load_split

    n_all = int(load_split(root / "data", "train")["query"].nunique())
    if (root / "finetuned" / "index").exists():  # the served default (`firstlight demo --finetune true`)
        rows[ALL] = (n_all, evaluate(root, out, "all", index=root / "finetuned" / "index",
                                  emb=root / "finetuned" / "embeddings"))
    else:
        rows[ALL] = (n_all, evaluate(root, out, "all", model=train(out, "all", {"prepared_dir": str(root / "data"),
                                                                             "model": base})))
    budgets = [int(b) for b in args.budgets.split(",") if b]
    if "budgets" in parts:
        for n in budgets:
            model = train(out, f"budget-{n}", {"prepared_dir": str(root / "data"), "data": {"max_queries": n},
                                               "model": base, "checkpoints": {"val_queries": 0}})
            rows[f"{n:,} labelled queries"] = (n, evaluate(root, out, f"budget-{n}", model=model))
    synthetic_model = None
    if parts & {"synthetic", "combined"}:
        prepared = catalogue_only(root, out)  # no judgments folder: nothing label-free can read one
        synthetic = run_synthesize(SynthesizeConfig(prepared_dir=str(prepared), index_dir=str(root / "index"),
                                                    output_dir=str(out / "synthetic"),
                                                    **json.loads(args.synthesize)))
        synthetic_model = train(out, "synthetic", {"prepared_dir": str(prepared), "pairs": "synthetic",
                                                   "synthetic_dir": str(synthetic), "model": base})
        rows["label-free (synthetic pairs)"] = (0, evaluate(root, out, "synthetic", model=synthetic_model))
    if "combined" in parts:
        for n in [int(b) for b in args.combined.split(",") if b]:
            model = train(out, f"synthetic+{n}", {"prepared_dir": str(root / "data"), "model": str(synthetic_model),
                                                  "data": {"max_queries": n}, "checkpoints": {"val_queries": 0}})
            rows[f"label-free, then {n:,} labelled queries"] = (n, evaluate(root, out, f"synthetic+{n}", model=model))
    for name, settings in json.loads(args.variants).items():  # other recipes for the combined budgets
        tag = "".join(c if c.isalnum() else "_" for c in name)
        for n in [int(b) for b in args.combined.split(",") if b]:
            for start, label in ((base, f"{n:,} labelled queries"),
                                 (synthetic_model, f"label-free, then {n:,} labelled queries")):
                if start is None:
                    continue
                run = f"{'synthetic+' if start == synthetic_model else 'budget-'}{n}-{tag}"
                model = train(out, run, {"prepared_dir": str(root / "data"), "model": str(start),
                                         "data": {"max_queries": n}, "checkpoints": {"val_queries": 0}, **settings})
                rows[f"{label}, {name}"] = (n, evaluate(root, out, run, model=model))
    served = {}
    if "served" in parts:  # the served path (hybrid + reranker), encoder and reranker on the same budget
        served["all labels"] = evaluate(root, out, "served-all", index=root / "finetuned" / "index",
                                        emb=root / "finetuned" / "embeddings", reranker=root / "reranker" / "model")
        for n in [int(b) for b in args.served.split(",") if b]:
            index = out / f"index-budget-{n}"
            if not index.exists():
                raise SystemExit(f"measure the {n}-query budget first (--only budgets --budgets {n})")
            reranker = train_reranker(out, f"reranker-{n}", {
                "prepared_dir": str(root / "data"), "first_stage_index_dir": str(index),
                "data": {"max_queries": n}, "checkpoints": {"val_queries": 0}})
            served[f"{n:,} labelled queries"] = evaluate(root, out, f"served-{n}", index=index,
                                                        emb=out / f"emb-budget-{n}", reranker=reranker)
    write_report(rows, out, root.name, served)


def train_reranker(out: Path, name: str, settings: dict) -> Path:
    from common.config import build_config
    from train.driver import run_train
    from train.rerank_config import RerankerConfig

    run = out / f"run-{name}"
    if (run / "model" / "model.safetensors").exists():
        return run / "model"
    shutil.rmtree(run, ignore_errors=True)
    return Path(run_train(build_config(RerankerConfig, {"output_dir": str(run), **settings})))


def _figure(res: dict, key: str, metric: str = "ndcg@10") -> str:
    return f"{res[key]['mean'][metric]:.3f}" if key in res else "-"


def write_report(rows: dict, out: Path, dataset: str, served: dict | None = None) -> None:
    from evaluation.compare import paired_bootstrap

    zero, full = rows["zero-shot"][1], rows[ALL][1]
    gain = full["crowd_dense"]["mean"]["ndcg@10"] - zero["crowd_dense"]["mean"]["ndcg@10"]
    table = []
    for label, (n, res) in rows.items():
        share = (res["crowd_dense"]["mean"]["ndcg@10"] - zero["crowd_dense"]["mean"]["ndcg@10"]) / gain
        name = f"{label} ({n:,} queries)" if label == ALL else label
        table.append(f"| {name} | {_figure(res, 'crowd_dense')} | {_figure(res, 'crowd_dense', 'recall@100')} | "
                     f"{_figure(res, 'pool_dense')} | {_figure(res, 'crowd_fusion')} | {_figure(res, 'pool_fusion')} | "
                     f"{share:.0%} |")
    intervals = []
    for label, (n, res) in rows.items():
        if n != 500 and not label.startswith("label-free"):
            continue
        for other_label, other in (("zero-shot", zero), ("all labels", full)):
            for yard in ("crowd", "pool") if "pool_dense" in res else ("crowd",):
                d = paired_bootstrap(res[f"{yard}_dense"]["per_query"], other[f"{yard}_dense"]["per_query"])
                intervals.append(f"| {label} − {other_label} | {yard} | {d['mean_diff']:+.3f} | "
                                 f"[{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] | {d['queries']} |")
    raw = {label: {k: v["mean"] for k, v in res.items()} for label, (_, res) in rows.items()}
    served = served or {}
    raw["served"] = {label: {k: v["mean"] for k, v in res.items()} for label, res in served.items()}
    served_table = "\n".join(f"| {label} | {_figure(res, 'crowd_rerank')} | {_figure(res, 'crowd_rerank', 'recall@100')} "
                             f"| {_figure(res, 'pool_rerank')} |" for label, res in served.items())
    if dataset != "homedepot":
        body = f"""
{dataset} with its own encoder (the zero-shot index's), the same recipe: all its training queries'
judgments, or the catalogue alone (`firstlight synthesize` + `train --pairs synthetic`, no judgments).
Test split, crowd labels only (no judged pool).

| trained on | nDCG@10 | Recall@100 | pool nDCG@10 | hybrid nDCG@10 | hybrid pool nDCG@10 | share of all-label gain |
|---|---|---|---|---|---|---|
{chr(10).join(table)}
"""
        update_section(f"label_budget_{dataset}", f"Label-free adaptation on {dataset}",
                       f"python benchmarks/quality/bench_label_budget.py --workdir artifacts/{dataset}", body, raw)
        return
    plot(rows, out)
    body = f"""
The default recipe (MiniLM, one epoch) trained on N training queries drawn at random with all their
judgments (`--data.max_queries N`, no validation labels: the last step is kept), or on the catalogue
alone (`firstlight synthesize` + `train --pairs synthetic`, from a folder with no judgments). Test split,
835 unseen queries over all 54,667 products; the judged pool (with its blind-graded supplement, as the
served default is measured): its 53 queries with an exact match.
"share" is the nDCG@10 gain over zero-shot as a share of the all-label gain (encoder alone, crowd labels).

| trained on | nDCG@10 | Recall@100 | pool nDCG@10 | hybrid nDCG@10 | hybrid pool nDCG@10 | share of all-label gain |
|---|---|---|---|---|---|---|
{chr(10).join(table)}

The served path (hybrid + reranker over the top 10, blend 0.6), its encoder and its reranker
(`train-reranker --data.max_queries N`, over that encoder's index) trained on the same N queries:

| labels | nDCG@10 | Recall@100 | pool nDCG@10 |
|---|---|---|---|
{served_table}

Paired bootstrap (encoder alone, nDCG@10, 95%):

| comparison | labels | difference | interval | queries |
|---|---|---|---|---|
{chr(10).join(intervals)}

![label budget curve](../docs/images/label_budget.png)
"""
    update_section("label_budget", "Label budget: what N judged queries buy, and what the catalogue alone gives",
                   "python benchmarks/quality/bench_label_budget.py", body, raw)


def plot(rows: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = sorted((n, res) for label, (n, res) in rows.items() if "label-free" not in label and ", " not in label and n > 0)
    zero = rows["zero-shot"][1]
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for yard, style in (("crowd", "o-"), ("pool", "s--")):
        xs = [n for n, _ in curve]
        ax.plot(xs, [r[f"{yard}_dense"]["mean"]["ndcg@10"] for _, r in curve], style, label=f"labels ({yard})")
        ax.axhline(zero[f"{yard}_dense"]["mean"]["ndcg@10"], color="grey", lw=0.8, ls=":")
        free = rows.get("label-free (synthetic pairs)")
        if free:
            ax.axhline(free[1][f"{yard}_dense"]["mean"]["ndcg@10"], color="tab:green", lw=1, ls="-.")
        combined = rows.get("label-free, then 500 labelled queries")
        if combined:
            ax.plot([500], [combined[1][f"{yard}_dense"]["mean"]["ndcg@10"]], "*", color="tab:green", ms=10,
                    label="label-free, then 500" if yard == "crowd" else None)
    ax.set_xscale("log")
    ax.set_xticks([n for n, _ in curve], [f"{n:,}" for n, _ in curve])
    ax.minorticks_off()
    ax.set_xlabel("judged training queries")
    ax.set_ylabel("test nDCG@10 (encoder alone)")
    ax.set_title("Label budget (dotted: zero-shot; dash-dot: label-free)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    target = Path(__file__).resolve().parents[2] / "docs" / "images" / "label_budget.png"
    fig.savefig(target, dpi=110)
    fig.savefig(out / "label_budget.png", dpi=110)


if __name__ == "__main__":
    main()
