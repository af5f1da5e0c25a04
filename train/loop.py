"""The per-worker training loop that Ray Train's ``TorchTrainer`` runs on every worker.

Reads top to bottom: the task (``train.tasks``: model, step, validator), config and engine
(``train.engine``), the state to start from (``train.checkpoints.restore``), then epochs of micro-batches from this worker's Ray
Data shard, with a checkpoint (validated, every rank's shards) every ``checkpoint_every`` steps.
A resumed epoch skips the micro-batches already done; Ray Data's order within an epoch is not
guaranteed to repeat exactly, so a few pairs may be seen twice or not at all in that epoch.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from common import storage
from common.runtime import setup_logging
from model.folders import resolve_model_path
from train.checkpoints import restore, save_checkpoint
from train.config import TrainConfig
from train.engine import Engine, attention_for
from train.losses import world
from train.progress import RunLog
from train.tasks import TASKS

log = logging.getLogger(__name__)


def train_loop(config: dict) -> None:
    import ray.train
    from transformers import AutoTokenizer

    setup_logging()  # a worker's progress lines reach the driver's terminal through Ray's log forwarding
    task = TASKS[config["task"]]
    cfg = config["cfg"]  # the driver's config object (Ray pickles it to every worker)
    if storage.is_uri(cfg.prepared_dir):  # this node's mirror (fetched once per node)
        cfg = replace(cfg, prepared_dir=str(storage.pull(cfg.prepared_dir)))
    model_path = resolve_model_path(cfg.model) if storage.is_uri(cfg.model) else config["model_path"]
    output_uri = config.get("output_uri")
    ctx = ray.train.get_context()
    rank, world_size = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg.optim.seed)
    if not cfg.dist.gpu:
        # The node's cores shared by the workers on it (Ray Data's short tasks interleave).
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // ctx.get_local_world_size()))
        # Denormal floats (|x| < 1e-38) take x86 cores a slow path: in a probe of this loop one seed
        # ran bf16 at 42 pairs/s, 82 with them flushed to zero.
        torch.set_flush_denormal(True)
    output_dir = Path(cfg.output_dir)
    _record_nodes(rank, world_size, output_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    engine = Engine(cfg, task.model(cfg, model_path, attention_for(cfg)), config["total_steps"], world_size)
    step = task.stepper(cfg)  # the loss, then backward and the optimizer step (train.steps)
    validator = task.validator(cfg, tokenizer, model_path, config)
    state = restore(engine, cfg, rank, output_dir)

    def checkpoint(metrics: dict) -> None:
        save_checkpoint(engine, validator, state, metrics, cfg, tokenizer, rank, output_uri)

    total = config["total_steps"]
    run_log = RunLog(output_dir, state["step"], total, cfg.checkpoints.report_every) if rank == 0 else None
    shard = ray.train.get_dataset_shard("train")
    started, pairs_seen = time.perf_counter(), 0
    while state["epoch"] < cfg.optim.epochs and state["step"] < total:
        batches = shard.iter_torch_batches(batch_size=cfg.optim.batch_size, drop_last=True)
        batches = task.batches(cfg, batches, np.random.default_rng([cfg.optim.seed, rank, state["epoch"]]))
        skip = state["micro_in_epoch"]
        for batch in _in_step(batches):
            if skip:
                skip -= 1
                continue
            if pairs_seen == 0:
                started = time.perf_counter()  # throughput counts from the first batch, not data start-up
            loss, logged, stepped = step(engine, batch)
            state["micro_in_epoch"] += 1
            pairs_seen += task.examples_in(batch) * world_size
            if not stepped:
                continue
            state["step"] += 1
            _maybe_fail(cfg, state["step"], config["fail_marker"])
            metrics = {"step": state["step"], "epoch": state["epoch"], "loss": float(loss.item()),
                       "lr": engine.lr(), **logged, "pairs_per_s": pairs_seen / (time.perf_counter() - started)}
            if (cfg.checkpoints.every and state["step"] % cfg.checkpoints.every == 0) or state["step"] >= total:
                checkpoint(metrics)
            elif state["step"] % cfg.checkpoints.report_every == 0:
                ray.train.report(metrics)  # a report synchronises all workers (~1 s on CPU): not every step
            if run_log is not None:
                run_log.add(metrics)
            if state["step"] >= total or _patience_spent(cfg, state):
                break
        else:
            state["epoch"] += 1
            state["micro_in_epoch"] = 0
            if not cfg.checkpoints.every and state["epoch"] < cfg.optim.epochs:
                checkpoint({"step": state["step"], "epoch": state["epoch"]})
            if not _patience_spent(cfg, state):
                continue
        break
    if state.get("saved_step") != state["step"]:  # the data ran out before the planned last step
        checkpoint({"step": state["step"], "epoch": state["epoch"]})
    if run_log is not None:
        run_log.close()


def _maybe_fail(cfg: TrainConfig, step: int, marker: str) -> None:
    """Tests only (``fail_at_step``): raise once, so recovery from the last checkpoint can be checked."""
    if cfg.fail_at_step and step == cfg.fail_at_step and not os.path.exists(marker):
        Path(marker).parent.mkdir(parents=True, exist_ok=True)
        Path(marker).touch()
        raise RuntimeError(f"injected failure at step {step} (tests only)")


def _record_nodes(rank: int, world_size: int, folder: Path) -> None:
    """OUTPUT/worker_nodes.json: the Ray node of each rank, to check where a run really ran."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    nodes = [node]
    if world_size > 1:
        nodes = [None] * world_size
        dist.all_gather_object(nodes, node)
    if rank == 0:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "worker_nodes.json").write_text(json.dumps(nodes))
        log.info("[train] %d worker(s) on %d node(s)", world_size, len(set(nodes)))


def _patience_spent(cfg: TrainConfig, state: dict) -> bool:
    spent = bool(cfg.checkpoints.early_stopping_patience) and state.get("since_best", 0) >= cfg.checkpoints.early_stopping_patience
    if spent:
        log.info("[train] early stop at step %d: %d checkpoints without a better validation nDCG@10",
                 state["step"], state["since_best"])
    return spent


def _in_step(batches):
    """Yield batches while every worker still has one, so no worker waits alone in a collective."""
    for batch in batches:
        if not _all_have(True):
            return
        yield batch
    _all_have(False)


def _all_have(have: bool) -> bool:
    if world()[1] == 1:
        return have  # a lone worker (or no process group) has no one to wait for: no collective per batch
    flag = torch.tensor([1 if have else 0], dtype=torch.int64)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())
