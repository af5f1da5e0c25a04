"""The fine-tuning recipe: Ray Train runs DeepSpeed (or DDP) over N workers, contrastive InfoNCE.

Reads top to bottom: ``fit`` checks the config and builds the tokenised pairs (Ray Data), then
``TorchTrainer`` runs ``train_loop`` on every worker: model, optimizer + schedule, DeepSpeed engine,
then the loop (encode queries, positives and hard negatives, InfoNCE over the global batch, step),
with a checkpoint every ``checkpoint_every`` steps that holds every rank's DeepSpeed shards, the
trainer state, the config and the tokenizer. ``export_best`` turns the best checkpoint into a
sentence-transformers folder.

Features and limits:
- ZeRO 0-3, fp32/bf16 on CPU (gloo) and GPU, fp16 on GPU; gradient accumulation; clipping; AdamW
  with warmup and linear or cosine decay.
- In-batch negatives from all workers (see :mod:`train.loss`); accumulation does not add negatives,
  cached gradients (``grad_cache_chunk``, GradCache) do: a batch far larger than memory allows.
- LoRA adapters (``lora_rank > 0``, see :mod:`train.lora`), merged into the weights at export.
- Resume: automatic after a worker failure (``max_failures``), or from ``resume_from``. A resumed
  epoch skips the micro-batches already done; Ray Data's order within an epoch is not guaranteed
  to repeat exactly, so a few pairs may be seen twice or not at all in that epoch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from firstlight import storage
from train.config import TrainConfig
from train.distil import PRESENT, TEACHER, distil_columns
from train.pairs import negative_columns
from train.param_groups import optimizer_groups

log = logging.getLogger(__name__)
STATE_TAG = "state"


# ---------------------------------------------------------------------------------------------
# Driver side
# ---------------------------------------------------------------------------------------------
def fit(cfg: TrainConfig):
    """Train; return the Ray Train ``Result`` (best checkpoint, metrics, path)."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from train.encoder import resolve_model_path
    from train.pairs import build_pairs, tokenized_dataset

    prepared_uri = cfg.prepared_dir if storage.is_uri(cfg.prepared_dir or "") else None
    cfg, output_uri = _on_local_paths(cfg)
    cfg.validate()
    # Workers run in their own working directories: hand them absolute paths.
    cfg = replace(cfg, prepared_dir=str(Path(cfg.prepared_dir).resolve()),
                  output_dir=str(cfg.resolved_output_dir().resolve()))
    _check_earlier_run(cfg, output_uri)
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "firstlight" / "torch_extensions"))
    model_path = resolve_model_path(cfg.model)
    pairs = build_pairs(cfg.prepared_dir, cfg)
    # popped before Ray Data copies the table: the matrices travel once, through the object store
    teacher = pairs.attrs.pop("teacher", None)
    if len(pairs) < cfg.batch_size * cfg.num_workers:
        from firstlight.errors import ConfigError
        raise ConfigError("batch_size", f"only {len(pairs)} training pairs for {cfg.num_workers} worker(s) x "
                          f"batch {cfg.batch_size}", "lower --batch-size or add judgments")
    steps_per_epoch = len(pairs) // (cfg.batch_size * cfg.num_workers * cfg.grad_accum)
    total_steps = steps_per_epoch * cfg.epochs
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps) if total_steps else cfg.max_steps
    second = f", {int(pairs['has_negative2'].sum())} with a second (mined)" if "has_negative2" in pairs else ""
    log.info("[train] %d pairs (%d with a hard negative%s); %d worker(s) x batch %d x accumulation %d; %d steps",
             len(pairs), int(pairs["has_negative"].sum()), second, cfg.num_workers, cfg.batch_size, cfg.grad_accum,
             total_steps)
    if teacher is not None:
        log.info("[train] every step also distils the ensemble teacher (%d-dimensional; %d queries, %d products)",
                 teacher[1].shape[1], len(teacher[0]), len(teacher[1]))
    if PRESENT in pairs:
        log.info("[train] %d pairs also distil the teacher's ranking of %d unjudged products each",
                 int(pairs[PRESENT].sum()), cfg.distil_candidates)
    if cfg.strategy == "deepspeed":
        log.info("[train] DeepSpeed ZeRO-%d%s, %s%s", cfg.zero_stage_in_use,
                 f" (asked {cfg.zero_stage}: one worker has nothing to shard)" if cfg.zero_stage_in_use != cfg.zero_stage
                 else "", cfg.precision, " by autocast over fp32 weights" if cfg.autocast else "")
    out = cfg.resolved_output_dir()
    tokens = tokenized_dataset(pairs, model_path, cfg)
    if cfg.pretokenize:  # on few cores a tokeniser running beside the training loop slows every step
        tokens = tokens.materialize()
    trainer = TorchTrainer(
        train_loop,
        # a worker on another node fetches its own copy of cloud inputs (validation reads the val split)
        train_loop_config={"cfg": asdict(replace(cfg, prepared_dir=prepared_uri or cfg.prepared_dir)),
                           "model_path": model_path, "total_steps": max(total_steps, 1),
                           "fail_marker": str(out / ".failed_once"), "output_uri": output_uri,
                           "teacher": ray.put(teacher) if teacher is not None else None},
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                     resources_per_worker={"CPU": cfg.cpus_per_worker},
                                     placement_strategy=cfg.placement_strategy),
        datasets={"train": tokens},
        run_config=RunConfig(
            name="run", storage_path=output_uri or str(out),  # a URI: every rank uploads its own shards
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.keep_checkpoints,
                                               checkpoint_score_attribute="val_ndcg@10" if cfg.val_queries else "step",
                                               checkpoint_score_order="max"),
            failure_config=FailureConfig(max_failures=cfg.max_failures)),
    )
    return trainer.fit()


# Settings a resumed run must share with the run it resumes (DeepSpeed shards are laid out by them).
_RESUME_KEYS = ("model", "strategy", "zero_stage", "num_workers", "batch_size", "grad_accum", "grad_cache_chunk",
                "lora_rank", "precision", "mixed_precision")


def _on_local_paths(cfg: TrainConfig) -> tuple[TrainConfig, str | None]:
    """Training with cloud URIs: inputs fetched to local mirrors; an output URI becomes its mirror (for
    the files rank 0 writes, uploaded at each checkpoint) and is returned, for Ray Train's checkpoints
    to go straight there."""
    from firstlight.errors import ConfigError

    changes, output_uri = {}, None
    if storage.is_uri(cfg.prepared_dir or ""):
        if not cfg.output_dir:
            raise storage.output_not_derived("output_dir")
        if cfg.mines_index and not cfg.mine_index_dir:
            cfg = replace(cfg, mine_index_dir=storage.join(storage.parent(cfg.prepared_dir), "index"))
        changes["prepared_dir"] = str(storage.pull(cfg.prepared_dir))
    if storage.is_uri(cfg.mine_index_dir or "") and cfg.mines_index:
        changes["mine_index_dir"] = str(storage.pull(cfg.mine_index_dir))
    if storage.is_uri(cfg.distil_index_dir or ""):
        changes["distil_index_dir"] = str(storage.pull(cfg.distil_index_dir))
    if storage.is_uri(cfg.output_dir or ""):
        output_uri = cfg.output_dir.rstrip("/")
        changes["output_dir"] = str(storage.mirror_of(output_uri))
    if storage.is_uri(cfg.resume_from or "") and not storage.exists(storage.join(cfg.resume_from,
                                                                                   "trainer_state.json")):
        raise ConfigError("resume_from", f"{cfg.resume_from} is not a FirstLight training checkpoint "
                          "(no trainer_state.json)", "pass a checkpoint_* folder from a training run")
    return replace(cfg, **changes), output_uri


def _check_earlier_run(cfg: TrainConfig, output_uri: str | None = None) -> None:
    """Ray Train resumes a run it finds in OUTPUT/run (what makes a crashed job's rerun lose nothing);
    a run with other settings cannot be resumed, so say so instead of failing inside DeepSpeed."""
    from firstlight.errors import ConfigError

    if output_uri:
        configs = [storage.join(c, "train_config.json")
                   for c in storage.list_dir(storage.join(output_uri, "run"), "checkpoint_")]
        saved = [storage.read_text(c) for c in configs if storage.exists(c)]
    else:
        saved = [p.read_text() for p in sorted((Path(cfg.output_dir) / "run").glob("checkpoint_*/train_config.json"))]
    if not saved:
        return
    before = json.loads(saved[-1])
    changed = [k for k in _RESUME_KEYS if before.get(k) != getattr(cfg, k)]
    if changed:
        raise ConfigError("output_dir", f"{cfg.output_dir} holds an earlier training run with other settings "
                          f"({', '.join(f'{k}={before.get(k)!r} there, {getattr(cfg, k)!r} now' for k in changed)}), "
                          "which Ray Train would try to resume", "pass a new --output-dir, or that run's settings "
                          "to resume it")
    log.info("[train] resuming the earlier run in %s (same settings)", Path(cfg.output_dir) / "run")


# ---------------------------------------------------------------------------------------------
# Worker side
# ---------------------------------------------------------------------------------------------
def _micro_steps(cfg: TrainConfig) -> tuple[int, int]:
    """(texts per backward pass, backward passes per optimizer step) as DeepSpeed sees them."""
    if cfg.grad_cache_chunk:  # each chunk's re-forward + backward is one DeepSpeed micro-step
        return cfg.grad_cache_chunk, cfg.batch_size // cfg.grad_cache_chunk
    return cfg.batch_size, cfg.grad_accum


def _deepspeed_config(cfg: TrainConfig, world_size: int) -> dict:
    micro, steps = _micro_steps(cfg)
    return {
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": steps,
        "train_batch_size": micro * steps * world_size,
        "gradient_clipping": cfg.max_grad_norm,
        "zero_optimization": {"stage": cfg.zero_stage_in_use},
        # autocast: fp32 weights and optimizer, bf16 matrix products; else 16-bit weights + fp32 masters
        "torch_autocast": {"enabled": cfg.autocast, "dtype": "bfloat16"},
        "bf16": {"enabled": cfg.precision == "bf16" and not cfg.autocast},
        "fp16": {"enabled": cfg.precision == "fp16"},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }


def _scheduler(optimizer, cfg: TrainConfig, total_steps: int):
    from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

    warmup = int(cfg.warmup_ratio * total_steps)
    make = get_cosine_schedule_with_warmup if cfg.schedule == "cosine" else get_linear_schedule_with_warmup
    return make(optimizer, warmup, total_steps)


class _Engine:
    """DeepSpeed and DDP behind one small interface: forward, backward+step, save, load."""

    def __init__(self, cfg: TrainConfig, model, total_steps: int, world_size: int):
        self.cfg = cfg
        groups = optimizer_groups(model.named_parameters(), cfg.lr, cfg.weight_decay, cfg.layer_lr_decay,
                                  getattr(model.config, "num_hidden_layers", 0))
        # The fused kernel (CPU and GPU): one pass over all parameters instead of a loop of small ops.
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, fused=True)
        scheduler = _scheduler(optimizer, cfg, total_steps)
        if cfg.strategy == "deepspeed":
            import deepspeed

            self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
                model=model, optimizer=optimizer, lr_scheduler=scheduler,
                config=_deepspeed_config(cfg, world_size), dist_init_required=False)
            if world_size == 1 and cfg.zero_stage_in_use == 0:
                # ZeRO-0 all-reduces every gradient after backward; with one worker that is a pure copy.
                self.engine.enable_backward_allreduce = False
            self.device = self.engine.device
        else:
            import ray.train.torch

            self.engine = ray.train.torch.prepare_model(model)
            self.optimizer, self.scheduler = optimizer, scheduler
            self.device = next(self.engine.parameters()).device
            self.micro = 0

    @property
    def module(self):
        return self.engine.module if hasattr(self.engine, "module") else self.engine

    def embed(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        from train.encoder import TextEncoder

        length = int(mask.sum(dim=1).max().item())  # trim padding shared by the whole batch
        ids, mask = ids[:, :length].to(self.device), mask[:, :length].to(self.device)
        out = self.engine(input_ids=ids, attention_mask=mask)
        return TextEncoder.pool(out.last_hidden_state, mask)

    def backward_step(self, loss: torch.Tensor, whole: bool = False) -> bool:
        """Backward and (on an accumulation boundary) step; True when the optimizer stepped.

        ``whole``: ``loss`` already carries its full weight (a cached-gradient chunk), so it is not
        divided by the number of micro-steps."""
        _, steps = _micro_steps(self.cfg)
        if self.cfg.strategy == "deepspeed":
            boundary = self.engine.is_gradient_accumulation_boundary()
            self.engine.backward(loss, scale_wrt_gas=not whole)
            self.engine.step()
            return boundary
        self.micro += 1
        last = self.micro % steps == 0
        sync = self.engine.no_sync() if hasattr(self.engine, "no_sync") and not last else contextlib.nullcontext()
        with sync:  # DDP all-reduces gradients once, on the step's last micro-step
            (loss if whole else loss / steps).backward()
        if not last:
            return False
        if self.cfg.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.engine.parameters(), self.cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return True

    def lr(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    def save(self, folder: Path, rank: int) -> None:
        if self.cfg.strategy == "deepspeed":
            self.engine.save_checkpoint(str(folder), tag=STATE_TAG)  # each rank writes its own shards
        elif rank == 0:
            torch.save({"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                        "scheduler": self.scheduler.state_dict()}, folder / "ddp_state.pt")

    def load(self, folder: Path) -> None:
        if self.cfg.strategy == "deepspeed":
            self.engine.load_checkpoint(str(folder), tag=STATE_TAG)
        else:
            state = torch.load(folder / "ddp_state.pt", map_location=self.device, weights_only=False)
            self.module.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])


def _cached_step(engine, batch: dict, cfg: TrainConfig, teacher=None):
    """One optimizer step over a large batch in chunks, with the exact gradient of the full batch.

    GradCache (Gao et al., 2021): (1) embed every text chunk by chunk without a graph; (2) InfoNCE
    over the whole batch (all workers') on those embeddings, backward to the embeddings only; (3)
    re-embed each chunk with a graph, under the same dropout randomness, and back-propagate the cached
    embedding gradients into the model. Memory is one chunk's activations; negatives are the batch's.
    """
    chunk, n = cfg.grad_cache_chunk, len(batch["query_ids"])
    texts = {name: (f"{name}_ids", f"{name}_mask") for name in ("query", *_product_columns(cfg, batch))}
    starts = range(0, n, chunk)
    rng, reps = {}, {}
    with torch.no_grad():
        for name, (ids, mask) in texts.items():
            parts = []
            for s in starts:
                rng[name, s] = _rng_state()
                parts.append(engine.embed(batch[ids][s:s + chunk], batch[mask][s:s + chunk]))
            reps[name] = torch.cat(parts).requires_grad_()
    loss, logged = _loss(cfg, engine, batch, reps["query"], *_by_role(reps, batch), teacher=teacher)
    loss.backward()
    after = _rng_state()
    stepped = False
    for s in starts:
        surrogate = 0.0
        for name, (ids, mask) in texts.items():
            _set_rng_state(rng[name, s])
            emb = engine.embed(batch[ids][s:s + chunk], batch[mask][s:s + chunk])
            surrogate = surrogate + (emb * reps[name].grad[s:s + chunk]).sum()
        stepped = engine.backward_step(surrogate, whole=True)
    _set_rng_state(after)
    return loss.detach(), logged, stepped


def _product_columns(cfg: TrainConfig, batch: dict) -> list[str]:
    """The product texts a step encodes: positives, hard negatives (unless off), distillation candidates."""
    negatives = negative_columns(batch) if cfg.hard_negatives != "none" else []
    return ["positive", *negatives, *distil_columns(batch)]


def _by_role(embedded: dict, batch: dict) -> tuple:
    """(positives, negatives, distillation candidates) from the embeddings of each product column
    (name -> tensor); negatives and candidates are their columns one after another, None if absent."""
    negatives = [embedded[name] for name in negative_columns(batch) if name in embedded]
    candidates = [embedded[name] for name in distil_columns(batch)]
    return (embedded["positive"], torch.cat(negatives) if negatives else None,
            torch.cat(candidates) if candidates else None)


def _loss(cfg: TrainConfig, engine, batch: dict, queries, positives, negatives, distil=None, teacher=None):
    """InfoNCE as the config sets it, plus the distillation term where the batch has candidates
    (``distil``: their embeddings, column after column) and the ensemble teacher's term (``teacher``:
    its query and product matrices, train.ensemble); the one call site of both step kinds, so they
    cannot drift apart. Returns the loss and the figures to log beside it."""
    from train.loss import batch_scores, contrastive

    # A second hard negative (judged+mined) joins the first as more rows of the batch's shared
    # candidates: in-batch InfoNCE scores every query against every negative row anyway.
    names = negative_columns(batch)
    keys = None  # None: the config turns false-negative masking off
    if cfg.mask_duplicates:
        keys = {k: batch[f"{k}_key"].to(engine.device) for k in ("query", "positive")}
        keys["negative"] = torch.cat([batch[f"{name}_key"] for name in names]).to(engine.device)
    present = torch.cat([batch[f"has_{name}"] for name in names]).to(engine.device)
    scores = batch_scores(queries, positives, negatives, present, keys)  # shared by InfoNCE and the teacher's KL
    loss, seen = contrastive(scores, scale=cfg.scale, symmetric=cfg.symmetric_loss)
    logged = {"negatives_per_query": seen}
    if teacher is not None:
        from train.ensemble import teacher_vectors
        from train.loss import teacher_kl

        vectors = teacher_vectors(batch, teacher, names if negatives is not None else [])
        kl = teacher_kl(scores, {k: v.to(engine.device) for k, v in vectors.items()},
                        scale=cfg.scale, temperature=cfg.ensemble_temperature)
        loss = loss + cfg.ensemble_distil_weight * kl
        logged["ensemble_kl"] = float(kl.item())
    if distil is None:
        return loss, logged
    from train.distil import distil_kl

    candidates = distil.view(-1, *positives.shape).transpose(0, 1)  # (rows, candidates, dim)
    products = torch.cat([positives.unsqueeze(1), candidates], dim=1)
    kl = distil_kl(queries, products, batch[TEACHER].to(engine.device), batch[PRESENT].to(engine.device),
                   cfg.scale, cfg.distil_temperature)
    return loss + cfg.distil_weight * kl, {**logged, "distil_kl": float(kl.item())}


def _rng_state():
    """Dropout's randomness (CPU and, where used, the current GPU), to replay a forward pass exactly."""
    return torch.get_rng_state(), torch.cuda.get_rng_state() if torch.cuda.is_available() else None


def _set_rng_state(state) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1])


def load_trainable(cfg: TrainConfig, model_path: str):
    """The encoder to train: in training mode (dropout as --dropout says), with LoRA adapters if asked."""
    from transformers import AutoModel

    # On CPU, PyTorch's fused (flash) attention backward is slow in bf16: MiniLM's backward took 238-276 ms
    # a step with it against 131-148 in the plain matrix-product form. (With dropout on, the fused kernel
    # falls back to that form anyway.) GPUs keep transformers' own choice (the fused kernel where the
    # model has one).
    model = AutoModel.from_pretrained(model_path, attn_implementation=None if cfg.use_gpu else "eager")
    if cfg.lora_rank:
        from train.lora import add_adapters

        model = add_adapters(model, cfg)
    return model.train(cfg.dropout)  # from_pretrained hands back a model in eval mode: dropout off


def train_loop(config: dict) -> None:
    import ray.train
    from transformers import AutoTokenizer

    from train.validation import Validator

    cfg = TrainConfig(**config["cfg"])
    if storage.is_uri(cfg.prepared_dir):  # this node's mirror (fetched once per node)
        cfg = replace(cfg, prepared_dir=str(storage.pull(cfg.prepared_dir)))
    if storage.is_uri(cfg.model):
        from train.encoder import resolve_model_path

        config["model_path"] = resolve_model_path(cfg.model)
    output_uri = config.get("output_uri")
    ctx = ray.train.get_context()
    rank, world_size = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(cfg.seed)
    if not cfg.use_gpu:
        # The node's cores shared by the workers on it (Ray Data's short tasks interleave).
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // ctx.get_local_world_size()))
        # Denormal floats (|x| < 1e-38) take x86 cores a slow path: in a probe of this loop one seed
        # ran bf16 at 42 pairs/s, 82 with them flushed to zero (as another seed ran unflushed).
        torch.set_flush_denormal(True)
    _record_nodes(rank, world_size, Path(cfg.output_dir))
    tokenizer = AutoTokenizer.from_pretrained(config["model_path"])
    model = load_trainable(cfg, config["model_path"])
    engine = _Engine(cfg, model, config["total_steps"], world_size)
    validator = Validator(cfg, tokenizer) if cfg.val_queries else None
    teacher = ray.get(config["teacher"]) if config.get("teacher") is not None else None

    state = {"step": 0, "epoch": 0, "micro_in_epoch": 0, "best": None}
    # After a worker failure Ray hands back this run's latest checkpoint; otherwise --resume-from.
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None and cfg.resume_from:
        checkpoint = ray.train.Checkpoint(cfg.resume_from) if storage.is_uri(cfg.resume_from) \
            else ray.train.Checkpoint.from_directory(cfg.resume_from)
    if checkpoint:
        with checkpoint.as_directory() as folder:
            engine.load(Path(folder))
            state = json.loads((Path(folder) / "trainer_state.json").read_text())
        if rank == 0:
            log.info("[train] resumed at step %d (epoch %d)", state["step"], state["epoch"])
            out = Path(config["fail_marker"]).parent
            out.mkdir(parents=True, exist_ok=True)
            (out / "resumed_from.txt").write_text(f"{state['step']}\n")

    metrics_log = _MetricsLog(Path(cfg.output_dir), state["step"], cfg.report_every) if rank == 0 else None
    shard = ray.train.get_dataset_shard("train")
    started, pairs_seen = time.perf_counter(), 0
    total = config["total_steps"]
    while state["epoch"] < cfg.epochs and state["step"] < total:
        batches = shard.iter_torch_batches(batch_size=cfg.batch_size, drop_last=True)
        if cfg.length_window > 1:
            from train.batching import length_grouped

            batches = length_grouped(batches, cfg.length_window,
                                     np.random.default_rng([cfg.seed, rank, state["epoch"]]))
        skip = state["micro_in_epoch"]
        for batch in _in_step(batches):
            if skip:
                skip -= 1
                continue
            if pairs_seen == 0:
                started = time.perf_counter()  # throughput counts from the first batch, not data start-up
            if cfg.grad_cache_chunk:
                loss, logged, stepped = _cached_step(engine, batch, cfg, teacher)
            else:
                q = engine.embed(batch["query_ids"], batch["query_mask"])
                products = _product_columns(cfg, batch)  # one forward pass for every product text
                docs = engine.embed(torch.cat([batch[f"{name}_ids"] for name in products]),
                                    torch.cat([batch[f"{name}_mask"] for name in products]))
                embedded = dict(zip(products, docs.split(len(q))))
                loss, logged = _loss(cfg, engine, batch, q, *_by_role(embedded, batch), teacher=teacher)
                stepped = engine.backward_step(loss)
            state["micro_in_epoch"] += 1
            pairs_seen += len(batch["query_ids"]) * world_size
            if not stepped:
                continue
            state["step"] += 1
            if cfg.fail_at_step and state["step"] == cfg.fail_at_step and not os.path.exists(config["fail_marker"]):
                Path(config["fail_marker"]).parent.mkdir(parents=True, exist_ok=True)
                Path(config["fail_marker"]).touch()
                raise RuntimeError(f"injected failure at step {state['step']} (tests only)")
            metrics = {"step": state["step"], "epoch": state["epoch"], "loss": float(loss.item()),
                       "lr": engine.lr(), **logged,
                       "pairs_per_s": pairs_seen / (time.perf_counter() - started)}
            due = cfg.checkpoint_every and state["step"] % cfg.checkpoint_every == 0
            if due or state["step"] >= total:
                _checkpoint(engine, validator, state, metrics, cfg, tokenizer, rank, output_uri)
            elif state["step"] % cfg.report_every == 0:
                ray.train.report(metrics)  # a report synchronises all workers (~1 s on CPU): not every step
            if metrics_log is not None:
                metrics_log.add(metrics)
            if state["step"] >= total or _patience_spent(cfg, state):
                break
        else:
            state["epoch"] += 1
            state["micro_in_epoch"] = 0
            if not cfg.checkpoint_every and state["epoch"] < cfg.epochs:
                _checkpoint(engine, validator, state, {"step": state["step"], "epoch": state["epoch"]},
                            cfg, tokenizer, rank, output_uri)
            if not _patience_spent(cfg, state):
                continue
        break
    if state.get("saved_step") != state["step"]:  # the data ran out before the planned last step
        _checkpoint(engine, validator, state, {"step": state["step"], "epoch": state["epoch"]}, cfg, tokenizer, rank,
                    output_uri)
    if metrics_log is not None:
        metrics_log.close()


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


class _MetricsLog:
    """Every step's metrics to OUTPUT/metrics.jsonl at once (Ray keeps only reported ones) and to
    TensorBoard (tensorboard --logdir OUTPUT/tensorboard) in batches.

    Batches, because TensorBoard's writer slowed every training step while it was fed each step: in
    the full recipe (bf16, batch 32) 64.8 against 69.6 pairs/s; in a stripped-down copy of this loop
    30-46 against 70 with the writer idle and 81 with no writer. Steps are handed over every ``every``
    steps and at each validation; a crash can only lose TensorBoard's copy of the last few, never
    metrics.jsonl's."""

    NAMES = ("loss", "distil_kl", "ensemble_kl", "lr", "negatives_per_query", "pairs_per_s", "val_ndcg@10")

    def __init__(self, folder: Path, first_step: int, every: int):
        self.folder, self.first_step, self.every, self.pending, self.writer = folder, first_step, every, [], None

    def add(self, metrics: dict) -> None:
        with open(self.folder / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(metrics) + "\n")
        self.pending.append(metrics)
        if len(self.pending) >= self.every or "val_ndcg@10" in metrics:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events after a resumed checkpoint, so a resumed run's curves do not fork
            self.writer = SummaryWriter(str(self.folder / "tensorboard"), purge_step=self.first_step + 1)
        for metrics in self.pending:
            for name in self.NAMES:
                if name in metrics:
                    self.writer.add_scalar(f"train/{name}", metrics[name], metrics["step"])
        self.writer.flush()
        self.pending = []

    def close(self) -> None:
        self.flush()
        if self.writer is not None:
            self.writer.close()


def _patience_spent(cfg: TrainConfig, state: dict) -> bool:
    spent = bool(cfg.early_stopping_patience) and state.get("since_best", 0) >= cfg.early_stopping_patience
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
    from train.loss import world

    if world()[1] == 1:
        return have  # a lone worker (or no process group) has no one to wait for: no collective per batch
    flag = torch.tensor([1 if have else 0], dtype=torch.int64)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def _checkpoint(engine, validator, state, metrics, cfg, tokenizer, rank, output_uri=None) -> None:
    import ray.train

    if validator is not None:
        metrics["val_ndcg@10"] = validator(engine)
        if state["best"] is None or metrics["val_ndcg@10"] > state["best"]:
            state["best"] = metrics["val_ndcg@10"]
            state["since_best"] = 0
        else:
            state["since_best"] = state.get("since_best", 0) + 1
    state["saved_step"] = state["step"]
    with tempfile.TemporaryDirectory(prefix="firstlight-ckpt-") as tmp:
        folder = Path(tmp)
        engine.save(folder, rank)
        if rank == 0:
            (folder / "trainer_state.json").write_text(json.dumps(state))
            (folder / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2))
            tokenizer.save_pretrained(folder / "tokenizer")
            from train.lora import base_model

            base_model(engine.module).config.save_pretrained(folder / "model_config")
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
    if rank == 0 and output_uri:
        _upload_run_files(Path(cfg.output_dir), output_uri)


def _upload_run_files(folder: Path, uri: str) -> None:
    """Rank 0's own files (per-step metrics, TensorBoard, where ranks ran) to the output URI: its
    node's disk may not outlive the run."""
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and (rel.split("/")[0] == "tensorboard" or rel in (
                "metrics.jsonl", "worker_nodes.json", "resumed_from.txt")):
            storage.push_file(path, storage.join(uri, rel))


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------
def export_checkpoint(checkpoint_dir: Path, out: Path) -> Path:
    """Turn a training checkpoint (any strategy, any ZeRO stage) into a sentence-transformers folder."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from train.export import export_sentence_transformer

    folder = Path(checkpoint_dir)
    cfg = TrainConfig(**json.loads((folder / "train_config.json").read_text()))
    model = AutoModel.from_config(AutoConfig.from_pretrained(folder / "model_config"))
    if cfg.strategy == "ddp":
        weights = torch.load(folder / "ddp_state.pt", map_location="cpu", weights_only=False)["model"]
    elif not any((folder / STATE_TAG).glob("*zero_pp_rank_*_optim_states.pt")):  # ran as ZeRO-0, fp32 weights
        weights = torch.load(folder / STATE_TAG / "mp_rank_00_model_states.pt", map_location="cpu",
                             weights_only=False)["module"]
    else:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        weights = get_fp32_state_dict_from_zero_checkpoint(str(folder), tag=STATE_TAG)
    weights = {k: v.float() for k, v in weights.items()}
    if cfg.lora_rank:
        from train.lora import merged

        model, missing, unexpected = merged(model, weights, cfg), [], []
    else:
        missing, unexpected = model.load_state_dict(weights, strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise RuntimeError(f"checkpoint {folder} does not match its model: missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]}")
    state = json.loads((folder / "trainer_state.json").read_text())
    return export_sentence_transformer(model, AutoTokenizer.from_pretrained(folder / "tokenizer"), out,
                                       max_length=cfg.product_max_length,
                                       extra={"base_model": cfg.model, "step": state["step"],
                                              "val_ndcg@10": state.get("best")})


def run_train(cfg: TrainConfig) -> Path | str:
    """Train, then export the best checkpoint to OUTPUT/model; return that folder (or its URI)."""
    result = fit(cfg)
    output_uri = cfg.output_dir.rstrip("/") if storage.is_uri(cfg.output_dir or "") else None
    folder_out = storage.mirror_of(output_uri) if output_uri else cfg.resolved_output_dir().resolve()
    best = result.checkpoint
    if cfg.val_queries and result.best_checkpoints:
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


def read_history(folder: Path):
    """The run's per-step metrics (the last record of each step, should a resumed run repeat one)."""
    import pandas as pd

    path = Path(folder) / "metrics.jsonl"
    if not path.exists():
        return pd.DataFrame()
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return pd.DataFrame(rows).drop_duplicates("step", keep="last").sort_values("step").reset_index(drop=True)


def write_curves(folder: Path) -> None:
    """Save the run's metrics as CSV and a PNG of loss, learning rate and validation nDCG@10."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = read_history(folder)
    if history.empty:
        return
    history.to_csv(folder / "metrics.csv", index=False)
    panels = [c for c in ("loss", "distil_kl", "ensemble_kl", "lr", "val_ndcg@10") if c in history]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.4))
    for ax, column in zip(np.atleast_1d(axes), panels):
        data = history[["step", column]].dropna()
        ax.plot(data["step"], data[column], marker="o" if column == "val_ndcg@10" else None, markersize=3)
        ax.set_title(column)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(folder / "curves.png", dpi=110)
    plt.close(fig)
