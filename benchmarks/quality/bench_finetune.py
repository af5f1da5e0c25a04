"""Quality of a fine-tuned encoder against BM25, the zero-shot encoder and their fusion.

Embeds and indexes the catalogue with the fine-tuned model, evaluates it alone and fused with BM25
on the Home Depot test split (full catalogue), and compares each with the best baseline by a paired
bootstrap over queries. Usage (after `firstlight demo` and `firstlight train`):

    python benchmarks/quality/bench_finetune.py --model artifacts/homedepot/train/model --label "..." \
        --train-command "firstlight train ..." [--spell-correct]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.report import update_section  # noqa: E402
from common.paths import default_workdir  # noqa: E402
from ranking.hybrid import FirstStage  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="exported fine-tuned model folder")
    parser.add_argument("--label", default="fine-tuned all-MiniLM-L6-v2")
    parser.add_argument("--train-command", default="")
    parser.add_argument("--workdir", default=str(default_workdir() / "homedepot"))
    parser.add_argument("--section", default="finetune", help="RESULTS.md section to (re)write")
    parser.add_argument("--spell-correct", action="store_true",
                        help="correct query spelling for every system, baselines included")
    args = parser.parse_args()

    from common.runtime import ensure_ray, setup_logging
    from data_pipeline.embed import EmbedConfig, run_embed
    from data_pipeline.index import IndexConfig, run_index
    from evaluation.compare import paired_bootstrap, per_query
    from evaluation.evaluate import EvalConfig, run_evaluate

    setup_logging()
    ensure_ray()
    root = Path(args.workdir)
    suffix = "_spelled" if args.spell_correct else ""
    baseline_path = root / "eval" / "test.json"
    if not baseline_path.exists():
        sys.exit(f"no zero-shot results at {baseline_path}; run `firstlight demo` first")
    if args.spell_correct:  # the baselines get the same query correction as the fine-tuned model
        baseline_path = root / "eval" / "test_spelled.json"
        if not baseline_path.exists():
            run_evaluate(EvalConfig(prepared_dir=str(root / "data"), index_dir=str(root / "index"),
                                    spell_correct=True, output=str(baseline_path)))
    baseline = json.loads(baseline_path.read_text())
    tag = Path(args.model).resolve().parent.name
    ft_root = root / f"finetuned-{tag}"
    emb = run_embed(EmbedConfig(prepared_dir=str(root / "data"), output_dir=str(ft_root / "embeddings"),
                                model=str(Path(args.model).resolve())))
    idx = run_index(IndexConfig(embeddings_dir=str(emb), output_dir=str(ft_root / "index")))
    tuned = run_evaluate(EvalConfig(prepared_dir=str(root / "data"), index_dir=str(idx), embeddings_dir=str(emb),
                                    spell_correct=args.spell_correct, output=str(ft_root / f"test{suffix}.json")))
    assert tuned["query_order"] == baseline["query_order"]
    # the fusion's weights tuned on the val split (never on test), then applied to test
    wsum = run_evaluate(EvalConfig(prepared_dir=str(root / "data"), index_dir=str(idx), embeddings_dir=str(emb),
                                   systems=("bm25", "dense", "fusion"), first_stage=FirstStage(fusion="wsum"),
                                   tune_fusion_on="val", spell_correct=args.spell_correct,
                                   output=str(ft_root / f"test_wsum{suffix}.json")))
    weights = wsum["fusion"]["params"]["weights"]

    systems = {"BM25": (baseline, "bm25"), "zero-shot all-MiniLM-L6-v2": (baseline, "dense"),
               "zero-shot + BM25 (RRF)": (baseline, "fusion"),
               args.label: (tuned, "dense"), f"{args.label} + BM25 (RRF)": (tuned, "fusion"),
               f"{args.label} + BM25 (weighted sum, dense weight {weights[1]:.1f} tuned on val)": (wsum, "fusion")}
    metrics = ("ndcg@10", "recall@100", "mrr@10", "ndcg@10_judged")
    rows = [f"| {name} | " + " | ".join(f"{res['systems'][s]['mean'][m]:.3f}" for m in metrics) + " |"
            for name, (res, s) in systems.items()]
    baselines = list(systems)[:3]
    lines = []
    raw = {}
    for name in list(systems)[3:]:
        res, s = systems[name]
        for metric in ("ndcg@10", "recall@100"):
            best = max(baselines, key=lambda b: systems[b][0]["systems"][systems[b][1]]["mean"][metric])
            cmp = paired_bootstrap(per_query(res, s, metric), per_query(*systems[best], metric))
            raw[f"{name} vs {best} {metric}"] = cmp
            lines.append(f"| {name} | {metric} | {best} | {cmp['mean_diff']:+.3f} | "
                         f"[{cmp['ci_low']:+.3f}, {cmp['ci_high']:+.3f}] |")
    from model.folders import MANIFEST, is_ensemble

    ensemble = is_ensemble(args.model)
    info = json.loads((Path(args.model) / (MANIFEST if ensemble else "firstlight.json")).read_text())
    if ensemble:
        made = (f"an ensemble of {len(info['members'])} fine-tuned encoders: "
                + ", ".join(f"{Path(m['source']).parent.name} (weight {m['weight']:g})" for m in info["members"]))
    elif info.get("soup_of"):
        runs = ", ".join(Path(m).parent.name for m in info["soup_of"])
        made = f"the mean of the weights of {len(info['soup_of'])} fine-tuned encoders ({runs})"
    else:
        made = (f"best checkpoint: step {info.get('step')}, validation nDCG@10 "
                f"{info.get('val_ndcg@10') or float('nan'):.3f} on the sampled validation catalogue")
    body = f"""
{"Built" if ensemble else "Training"}: `{args.train_command}` ({made}). Test: {tuned['queries']:,} unseen
queries ranked over all {tuned['products']:,} products; evaluation command as in the quality section.

| system | nDCG@10 | Recall@100 | MRR@10 | nDCG@10 (judged only) |
|---|---|---|---|---|
{chr(10).join(rows)}

Paired bootstrap over the test queries (10,000 resamples, 95% percentile interval) against the best
baseline for each metric:

| system | metric | best baseline | difference | 95% CI |
|---|---|---|---|---|
{chr(10).join(lines)}
"""
    if args.spell_correct:
        body = ("\nEvery system, baselines included, ranks the spelling-corrected queries "
                f"({tuned['spell_correct']['queries_changed']} of {tuned['queries']} test queries changed).\n" + body)
    update_section(args.section, f"Fine-tuned encoder vs baselines on unseen queries: {args.label}",
                   f"python benchmarks/quality/bench_finetune.py --model {args.model}"
                   + (" --spell-correct" if args.spell_correct else ""), body, raw)


if __name__ == "__main__":
    main()
