"""Train the reranker variants the ablation compares: pointwise (BCE) vs listwise (ListNet) loss,
started from the pretrained MiniLM or from the fine-tuned bi-encoder. Each variant trains on the same
``--max-steps`` (a shorter run than the default recipe, so four fit in one sitting on 2 cores) and
lands in WORKDIR/rerankers/<variant>/model; `benchmarks/quality/bench_rerank.py` scores them.

    python benchmarks/quality/train_reranker_variants.py --max-steps 200
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from common.paths import default_workdir  # noqa: E402

VARIANTS = {  # name -> (start weights, loss)
    "listnet-pretrained": ("all-MiniLM-L6-v2", "listnet"),
    "bce-pretrained": ("all-MiniLM-L6-v2", "bce"),
    "listnet-finetuned": ("train/model", "listnet"),  # the default recipe's fine-tuned bi-encoder
    "bce-finetuned": ("train/model", "bce"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default=str(default_workdir() / "homedepot"))
    parser.add_argument("--first-stage-index-dir", default=None, help="default WORKDIR/finetuned-train/index")
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    root = Path(args.workdir)
    index = args.first_stage_index_dir or str(root / "finetuned-train" / "index")
    for name in args.variants.split(","):
        start, loss = VARIANTS[name]
        model = str(root / start) if "/" in start else start
        out = root / "rerankers" / name
        if (out / "model" / "config.json").exists():
            print(f"{name}: already trained in {out}")
            continue
        began = time.perf_counter()
        subprocess.run([sys.executable, "-m", "firstlight.cli", "train-reranker", "--prepared_dir", str(root / "data"),
                        "--first_stage_index_dir", index, "--model", model, "--loss", loss,
                        "--optim.max_steps", str(args.max_steps), "--output_dir", str(out)], check=True)
        print(f"{name}: trained in {time.perf_counter() - began:.0f}s -> {out / 'model'}")
    write_section(root, args)


def write_section(root: Path, args) -> None:
    """RESULTS.md: each trained variant's validation nDCG@10 at its checkpoints and its speed."""
    import json

    from benchmarks.report import update_section

    rows = []
    for name, (start, loss) in VARIANTS.items():
        log = root / "rerankers" / name / "metrics.jsonl"
        if not log.exists():
            rows.append(f"| {name} | {start} | {loss} | not run | | |")
            continue
        history = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        vals = ", ".join(f"{h['val_ndcg@10']:.3f} (step {h['step']})" for h in history if "val_ndcg@10" in h)
        rows.append(f"| {name} | {start} | {loss} | {vals} | {history[-1]['loss']:.3f} | "
                    f"{history[-1]['pairs_per_s']:.0f} |")
    body = ("Each variant: batch 16 queries x 8 products, lr 1e-4, bf16 autocast, one worker, "
            f"{args.max_steps} steps on lists mined from the hybrid first stage over the fine-tuned index. "
            "Validation: nDCG@10 (crowd labels) of 200 val queries' top-30 first-stage candidates reranked.\n\n"
            "| variant | start weights | loss | val nDCG@10 | last loss | pairs/s |\n|---|---|---|---|---|---|\n"
            + "\n".join(rows))
    update_section("rerank_train", "Reranker training: loss and start weights",
                   f"python benchmarks/quality/train_reranker_variants.py --max-steps {args.max_steps}", body)


if __name__ == "__main__":
    main()
