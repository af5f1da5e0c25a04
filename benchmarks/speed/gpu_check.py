"""The GPU check: every GPU figure FirstLight reports, in one run of under 8 minutes on one GPU.

    python benchmarks/speed/gpu_check.py            # on a GPU machine, after the README's setup with [gpu]

It runs, one after the other, each writing its own section of benchmarks/RESULTS.md:

1. training: pairs/s and MFU, bf16 + ZeRO-2, all-MiniLM-L6-v2 (`gpu_train.py`, section gpu_train);
2. FAISS on the GPU: flat and IVF, build, QPS, recall@100 at 1M vectors (`bench_scale.py`, index_scale_gpu);
3. catalogue embedding: Ray Data with one GPU actor vs SentenceTransformer.encode (`bench_embedding.py`,
   embedding_gpu);
4. HTTP: the Serve app with its encoders on the GPU vs the FastAPI baseline (`bench_serve.py`, serve_gpu).

It needs the Home Depot data and a zero-shot index; when WORKDIR/homedepot has none it first runs
`firstlight demo` (prepare, embed, index, evaluate: about a minute on a GPU).

``--device cpu`` is the dry run CI does: the same four steps on the CPU with small sizes, writing into
a scratch results file (``FIRSTLIGHT_RESULTS``) and never into RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.report import RESULTS_ENV, results_file  # noqa: E402
from benchmarks.speed import bench_embedding, bench_scale, bench_serve, gpu_train  # noqa: E402
from common.paths import default_homedepot_dir, default_workdir  # noqa: E402

# (full GPU run, CPU dry run) sizes per step
SIZES = {
    "train": (["--steps", "200", "--warmup-steps", "20", "--batch-size", "256"],
              ["--steps", "6", "--warmup-steps", "2", "--batch-size", "8", "--random-init"]),
    "scale_n": (1_000_000, 4),  # GPU: 1M vectors; dry run: 4 x the catalogue
    "scale": (["--queries", "500", "--single", "100"], ["--queries", "20", "--single", "5"]),
    "embedding": (["--titles", "50000"], ["--titles", "300", "--batch-size", "64"]),
    "serve": (["--seconds", "15", "--queries", "500"], ["--seconds", "1", "--queries", "20", "--modes", "default"]),
}


def ensure_inputs(root: Path, data_dir: str, model: str | None) -> None:
    from common.runtime import ensure_ray
    from firstlight.pipeline import DemoConfig, run_demo

    if (root / "index" / "index.faiss").exists() and (root / "data").exists():
        return
    print(f"[gpu-check] no index in {root}: running `firstlight demo` first", flush=True)
    ensure_ray()
    run_demo(DemoConfig(dataset="homedepot", data_dir=data_dir, workdir=str(root.parent), model=model))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--workdir", default=str(default_workdir()), help="artifacts root (holds homedepot/)")
    parser.add_argument("--data-dir", default=str(default_homedepot_dir()), help="the Home Depot CSV folder")
    parser.add_argument("--model", default=None, help="encoder (default all-MiniLM-L6-v2)")
    args = parser.parse_args(argv)
    gpu = args.device == "cuda"
    if gpu:
        import torch

        if not torch.cuda.is_available():
            sys.exit("no CUDA GPU visible: run on a GPU machine, or --device cpu for the dry run")
    elif not os.environ.get(RESULTS_ENV):
        os.environ[RESULTS_ENV] = str(Path(tempfile.mkdtemp(prefix="firstlight-gpu-check-")) / "RESULTS.md")
    pick = 0 if gpu else 1
    root = Path(args.workdir) / "homedepot"
    ensure_inputs(root, args.data_dir, args.model)
    model = ["--model", args.model] if args.model else []
    device = ["--device", args.device]
    from data_pipeline.vectors import load_embeddings
    from model.folders import resolve_model_path

    index_model = args.model or resolve_model_path("all-MiniLM-L6-v2")
    n_catalogue = len(load_embeddings(root / "embeddings" / "vectors")[0])
    scale_n = SIZES["scale_n"][0] if gpu else SIZES["scale_n"][1] * n_catalogue

    timings, out = {}, {}
    steps = [
        ("train", lambda: gpu_train.main(["--prepared-dir", str(root / "data"), *model, *device,
                                          *SIZES["train"][pick]])),
        ("scale", lambda: bench_scale.main(["--workdir", str(root), "--embeddings", str(root / "embeddings"),
                                            "--model", str(index_model), "--sizes", str(scale_n),
                                            "--kinds", "flat,ivf", *device, *SIZES["scale"][pick]])),
        ("embedding", lambda: bench_embedding.main(["--data-dir", args.data_dir, *model, *device,
                                                    *SIZES["embedding"][pick]])),
        ("serve", lambda: bench_serve.main(["--workdir", str(root), "--skip-autoscale", *device,
                                            *SIZES["serve"][pick]])),
    ]
    for name, step in steps:
        start = time.perf_counter()
        print(f"[gpu-check] {name} ...", flush=True)
        out[name] = step()
        timings[name] = time.perf_counter() - start
        print(f"[gpu-check] {name} done in {timings[name]:.0f} s", flush=True)
    print("[gpu-check] " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
          + f"; results in {results_file()}")
    return {"timings": timings, "results": str(results_file()), **out}


if __name__ == "__main__":
    main()
