"""The main job: prepare -> embed -> index -> evaluate on one dataset, each stage cached by manifest.

With ``--finetune true`` it is the whole pipeline: after the zero-shot stages it fine-tunes the
encoder (Ray Train + DeepSpeed), embeds and indexes the catalogue with the fine-tuned model and
evaluates that too (``eval/test_finetuned.json``). Everything goes under one storage root
(``--workdir``), which is what `ray job submit` runs on a cluster.

With the default dataset (Home Depot) absent, as on a fresh machine elsewhere, it falls back to
downloading WANDS and says so; with neither, it stops with a message that says where to put data.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from data_pipeline.embed import EmbedConfig, run_embed
from data_pipeline.prepare import PrepareConfig, run_prepare
from evaluation.evaluate import EvalConfig, run_evaluate
from firstlight import storage
from firstlight.config import check_choice, check_range
from firstlight.paths import HOMEDEPOT_ENV, default_homedepot_dir, default_workdir
from serve.index import IndexConfig, run_index
from train.config import HARD_NEGATIVE_MODES
from train.encoder import DEFAULT_MODEL

log = logging.getLogger(__name__)


@dataclass
class DemoConfig:
    dataset: str = field(default="auto", metadata={
        "help": "homedepot, wands, or auto (Home Depot when present, else download WANDS)"})
    data_dir: str | None = field(default=None, metadata={"help": "the dataset's folder"})
    workdir: str | None = field(default=None, metadata={"help": "artifacts root; default $FIRSTLIGHT_WORKDIR or ./artifacts"})
    model: str = field(default=DEFAULT_MODEL, metadata={"help": "encoder folder or hub name"})
    max_length: int = field(default=64, metadata={"help": "tokens per text"})
    actors: int = field(default=1, metadata={"help": "embedding actors"})
    cpus_per_actor: float = field(default=1.0, metadata={"help": "CPUs each embedding actor reserves"})
    gpus_per_actor: float = field(default=0.0, metadata={"help": "GPUs per embedding actor"})
    index_kind: str = field(default="flat", metadata={"help": "flat, ivf or hnsw"})
    seed: int = field(default=2026, metadata={"help": "split seed"})
    # the fine-tuning part of the pipeline (see `firstlight train --help` for the full set)
    finetune: bool = field(default=False, metadata={"help": "also fine-tune, then embed, index and evaluate again"})
    train_epochs: int = field(default=1, metadata={"help": "fine-tuning epochs"})
    train_max_steps: int = field(default=0, metadata={"help": "stop fine-tuning after this many steps (0 = all)"})
    train_batch_size: int = field(default=64, metadata={"help": "pairs per worker per step"})
    train_num_workers: int = field(default=1, metadata={"help": "Ray Train workers"})
    train_cpus_per_worker: float = field(default=1.0, metadata={"help": "CPUs per training worker"})
    train_use_gpu: bool = field(default=False, metadata={"help": "one GPU per training worker"})
    train_hard_negatives: str = field(default="both", metadata={"help": "none, judged, mined, both or judged+mined"})
    train_precision: str = field(default="fp32", metadata={"help": "fp32, bf16 or fp16 (GPU)"})

    def validate(self) -> None:
        check_choice("dataset", self.dataset, ("auto", "homedepot", "wands"))
        if self.finetune:  # bad training settings fail before any work (the rest when training starts)
            check_choice("train_hard_negatives", self.train_hard_negatives, HARD_NEGATIVE_MODES)
            check_choice("train_precision", self.train_precision, ("fp32", "bf16", "fp16"))
            for name in ("train_epochs", "train_batch_size", "train_num_workers"):
                check_range(name, getattr(self, name), 1)

    def train_config(self, prepared: str, output: str):
        from train.config import TrainConfig

        cfg = TrainConfig(prepared_dir=prepared, output_dir=output, model=self.model, epochs=self.train_epochs,
                          max_steps=self.train_max_steps, batch_size=self.train_batch_size,
                          num_workers=self.train_num_workers, cpus_per_worker=self.train_cpus_per_worker,
                          use_gpu=self.train_use_gpu, hard_negatives=self.train_hard_negatives,
                          precision=self.train_precision, query_max_length=min(32, self.max_length),
                          product_max_length=self.max_length)
        cfg.validate()
        return cfg

    def resolved_dataset(self) -> str:
        if self.dataset != "auto":
            return self.dataset
        folder = Path(self.data_dir) if self.data_dir else default_homedepot_dir()
        if (folder / "products.csv").exists():
            return "homedepot"
        log.warning("[demo] no Home Depot data in %s (set %s or --data-dir to use it); "
                    "downloading the public WANDS set instead", folder, HOMEDEPOT_ENV)
        return "wands"


def run_demo(cfg: DemoConfig) -> dict:
    cfg.validate()
    start = time.perf_counter()
    dataset = cfg.resolved_dataset()
    root = storage.join(cfg.workdir or str(default_workdir()), dataset)  # a folder or a cloud URI
    data_dir = cfg.data_dir if (cfg.dataset != "auto" or dataset == "homedepot") else None
    timings = {}

    t = time.perf_counter()
    prepared = run_prepare(PrepareConfig(dataset=dataset, data_dir=data_dir, output_dir=storage.join(root, "data"),
                                         seed=cfg.seed))
    timings["prepare"] = time.perf_counter() - t
    t = time.perf_counter()
    embeddings = run_embed(EmbedConfig(prepared_dir=str(prepared), output_dir=storage.join(root, "embeddings"),
                                       model=cfg.model, max_length=cfg.max_length, actors=cfg.actors,
                                       cpus_per_actor=cfg.cpus_per_actor, gpus_per_actor=cfg.gpus_per_actor))
    timings["embed"] = time.perf_counter() - t
    t = time.perf_counter()
    index = run_index(IndexConfig(embeddings_dir=str(embeddings), output_dir=storage.join(root, "index"),
                                  kind=cfg.index_kind))
    timings["index"] = time.perf_counter() - t
    t = time.perf_counter()
    results = run_evaluate(EvalConfig(prepared_dir=str(prepared), index_dir=str(index),
                                      embeddings_dir=str(embeddings), max_length=cfg.max_length,
                                      output=storage.join(root, "eval", "test.json")))
    timings["evaluate"] = time.perf_counter() - t
    if cfg.finetune:
        results = _finetune(cfg, root, str(prepared), timings)
    log.info("[demo] finished in %.0fs (%s); artifacts in %s", time.perf_counter() - start,
             ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()), root)
    return results


def _finetune(cfg: DemoConfig, root: str, prepared: str, timings: dict) -> dict:
    """Fine-tune, then embed + index + evaluate with the fine-tuned encoder."""
    from train.recipe import run_train

    t = time.perf_counter()
    model = storage.join(root, "train", "model")
    if storage.exists(storage.join(model, "config.json")) and storage.exists(storage.join(model, "firstlight.json")):
        log.info("[demo] reusing the fine-tuned model in %s", model)
    else:
        model = run_train(cfg.train_config(prepared, storage.join(root, "train")))
    timings["train"] = time.perf_counter() - t
    t = time.perf_counter()
    embeddings = run_embed(EmbedConfig(prepared_dir=prepared, output_dir=storage.join(root, "finetuned", "embeddings"),
                                       model=str(model), max_length=cfg.max_length, actors=cfg.actors,
                                       cpus_per_actor=cfg.cpus_per_actor, gpus_per_actor=cfg.gpus_per_actor))
    index = run_index(IndexConfig(embeddings_dir=str(embeddings), output_dir=storage.join(root, "finetuned", "index"),
                                  kind=cfg.index_kind))
    timings["embed + index (fine-tuned)"] = time.perf_counter() - t
    t = time.perf_counter()
    results = run_evaluate(EvalConfig(prepared_dir=prepared, index_dir=str(index), embeddings_dir=str(embeddings),
                                      max_length=cfg.max_length,
                                      output=storage.join(root, "eval", "test_finetuned.json")))
    timings["evaluate (fine-tuned)"] = time.perf_counter() - t
    return results
