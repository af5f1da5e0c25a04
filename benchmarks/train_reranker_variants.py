"""Train the reranker variants the ablation compares: pointwise (BCE) vs listwise (ListNet) loss,
started from the pretrained MiniLM or from the fine-tuned bi-encoder. Each variant trains on the same
``--max-steps`` (a shorter run than the default recipe, so four fit in one sitting on 2 cores) and
lands in WORKDIR/rerankers/<variant>/model; `benchmarks/bench_rerank.py` scores them.

    python benchmarks/train_reranker_variants.py --max-steps 200
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.paths import default_workdir  # noqa: E402

VARIANTS = {  # name -> (start weights, loss)
    "listnet-pretrained": ("all-MiniLM-L6-v2", "listnet"),
    "bce-pretrained": ("all-MiniLM-L6-v2", "bce"),
    "listnet-finetuned": ("train/model", "listnet"),
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
        subprocess.run([sys.executable, "-m", "firstlight.cli", "train-reranker", "--prepared-dir", str(root / "data"),
                        "--first-stage-index-dir", index, "--model", model, "--loss", loss,
                        "--max-steps", str(args.max_steps), "--output-dir", str(out)], check=True)
        print(f"{name}: trained in {time.perf_counter() - began:.0f}s -> {out / 'model'}")


if __name__ == "__main__":
    main()
