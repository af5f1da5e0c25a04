"""The training driver: a TrainConfig in, Ray Train's TorchTrainer (DeepSpeed or DDP) out, the best
checkpoint exported as a sentence-transformers folder.

``run_train`` is what `firstlight train`, `firstlight train-reranker` and the demo call: ``fit``
checks the config, has the config's task (``train.tasks``) build its tokenised examples (Ray Data)
and runs ``train.loop.train_loop`` on every worker;
then the best checkpoint (by validation nDCG@10) becomes OUTPUT/model.

Features and limits:
- ZeRO 0-3, fp32/bf16 on CPU (gloo) and GPU, fp16 on GPU; gradient accumulation; clipping; AdamW
  with warmup and linear or cosine decay (``train.engine``).
- In-batch negatives from all workers plus one hard negative per pair (``train.losses``);
  cached gradients (``grad_cache_chunk``) for batches larger than memory.
- LoRA adapters (``lora_rank > 0``, ``train.lora``), merged into the weights at export.
- Resume: automatic after a worker failure (``max_failures``), from ``resume_from``, or by rerunning
  the same command into the same output folder (``train.checkpoints``).
- Cloud storage: ``prepared_dir`` and ``output_dir`` may be bucket URIs (s3://, gs://, ...).
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

from common import storage
from common.errors import ConfigError
from model.folders import resolve_model_path
from train.checkpoints import check_earlier_run, export_checkpoint
from train.config import TrainConfig
from train.loop import train_loop
from train.progress import write_curves
from train.tasks import task_of

log = logging.getLogger(__name__)


def fit(cfg: TrainConfig):
    """Train; return the Ray Train ``Result`` (best checkpoint, metrics, path)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    prepared_uri = cfg.prepared_dir if storage.is_uri(cfg.prepared_dir or "") else None
    cfg, output_uri = _on_local_paths(cfg)
    cfg.validate()
    # Workers run in their own working directories: hand them absolute paths. "auto" precision is
    # decided here, once, so every worker and the saved config agree on it.
    cfg = replace(cfg, prepared_dir=str(Path(cfg.prepared_dir).resolve()),
                  output_dir=str(cfg.resolved_output_dir().resolve()), dist=replace(cfg.dist, precision=cfg.dist.resolved_precision(),
                                                                   use_gpu="yes" if cfg.dist.gpu else "no"))
    check_earlier_run(cfg, output_uri)
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "firstlight" / "torch_extensions"))
    model_path = resolve_model_path(cfg.model)
    task = task_of(cfg)
    tokens, count, extra = task.data(cfg, model_path)
    if count < cfg.optim.batch_size * cfg.dist.num_workers:
        raise ConfigError("optim.batch_size", f"only {count} training examples for {cfg.dist.num_workers} worker(s) x "
                          f"batch {cfg.optim.batch_size}", "lower --optim.batch_size or add judgments")
    steps_per_epoch = count // (cfg.optim.batch_size * cfg.dist.num_workers * cfg.optim.grad_accum)
    total_steps = steps_per_epoch * cfg.optim.epochs
    if cfg.optim.max_steps:
        total_steps = min(total_steps, cfg.optim.max_steps) if total_steps else cfg.optim.max_steps
    log.info("[train] %d worker(s) x batch %d x accumulation %d; %d steps", cfg.dist.num_workers, cfg.optim.batch_size,
             cfg.optim.grad_accum, total_steps)
    if cfg.dist.strategy == "deepspeed":
        log.info("[train] DeepSpeed ZeRO-%d%s, %s%s", cfg.dist.zero_stage_in_use,
                 f" (asked {cfg.dist.zero_stage}: one worker has nothing to shard)" if cfg.dist.zero_stage_in_use != cfg.dist.zero_stage
                 else "", cfg.dist.precision, " by autocast over fp32 weights" if cfg.dist.autocast else "")
    out = cfg.resolved_output_dir()
    if cfg.data.pretokenize:  # on few cores a tokeniser running beside the training loop slows every step
        tokens = tokens.materialize()
    trainer = TorchTrainer(
        train_loop,
        # a worker on another node fetches its own copy of cloud inputs (validation reads the val split)
        train_loop_config={"cfg": replace(cfg, prepared_dir=prepared_uri or cfg.prepared_dir),
                           "model_path": model_path, "total_steps": max(total_steps, 1),
                           "fail_marker": str(out / ".failed_once"), "output_uri": output_uri,
                           "task": task.name, **extra},
        scaling_config=ScalingConfig(num_workers=cfg.dist.num_workers, use_gpu=cfg.dist.gpu,
                                     resources_per_worker={"CPU": cfg.dist.cpus_per_worker},
                                     placement_strategy=cfg.dist.placement_strategy),
        datasets={"train": tokens},
        run_config=RunConfig(
            name="run", storage_path=output_uri or str(out),  # a URI: every rank uploads its own shards
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.checkpoints.keep,
                                               checkpoint_score_attribute="val_ndcg@10" if cfg.checkpoints.val_queries else "step",
                                               checkpoint_score_order="max"),
            failure_config=FailureConfig(max_failures=cfg.checkpoints.max_failures)),
    )
    return trainer.fit()


def _on_local_paths(cfg: TrainConfig) -> tuple[TrainConfig, str | None]:
    """Training with cloud URIs: inputs fetched to local mirrors; an output URI becomes its mirror (for
    the files rank 0 writes, uploaded at each checkpoint) and is returned, for Ray Train's checkpoints
    to go straight there."""
    changes, output_uri = {}, None
    if storage.is_uri(cfg.prepared_dir or ""):
        if not cfg.output_dir:
            raise storage.output_not_derived("output_dir")
        beside = storage.join(storage.parent(cfg.prepared_dir), "index")  # an unset index: PREPARED/../index
        cfg = replace(cfg, **{name: beside for name, path in cfg.index_inputs().items() if not path})
        changes["prepared_dir"] = str(storage.pull(cfg.prepared_dir))
    for name, path in cfg.index_inputs().items():
        if storage.is_uri(path or ""):
            changes[name] = str(storage.pull(path))
    if storage.is_uri(cfg.output_dir or ""):
        output_uri = cfg.output_dir.rstrip("/")
        changes["output_dir"] = str(storage.mirror_of(output_uri))
    if storage.is_uri(cfg.checkpoints.resume_from or "") and not storage.exists(storage.join(cfg.checkpoints.resume_from,
                                                                                   "trainer_state.json")):
        raise ConfigError("checkpoints.resume_from", f"{cfg.checkpoints.resume_from} is not a FirstLight training checkpoint "
                          "(no trainer_state.json)", "pass a checkpoint_* folder from a training run")
    return replace(cfg, **changes), output_uri


def run_train(cfg: TrainConfig) -> Path | str:
    """Train, then export the best checkpoint to OUTPUT/model; return that folder (or its URI)."""
    result = fit(cfg)
    output_uri = cfg.output_dir.rstrip("/") if storage.is_uri(cfg.output_dir or "") else None
    folder_out = storage.mirror_of(output_uri) if output_uri else cfg.resolved_output_dir().resolve()
    best = result.checkpoint
    if cfg.checkpoints.val_queries and result.best_checkpoints:
        best = max(result.best_checkpoints, key=lambda c: c[1].get("val_ndcg@10", -1))[0]
    out = folder_out / "model"
    with best.as_directory() as folder:  # a checkpoint in the cloud is fetched here
        export_checkpoint(Path(folder), out)
    if output_uri:  # rank 0 may have run on another node: its metrics come from the bucket
        storage.pull_file(storage.join(output_uri, "metrics.jsonl"))
    write_curves(folder_out)
    if output_uri:
        storage.push(out, storage.join(output_uri, "model"), marker="config.json")
        for name in ("curves.png", "metrics.csv"):
            if (folder_out / name).exists():
                storage.push_file(folder_out / name, storage.join(output_uri, name))
        out = storage.join(output_uri, "model")
    log.info("[train] exported %s -> %s (metrics %s)", best.path, out, result.metrics)
    return out
