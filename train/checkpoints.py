"""Checkpoints: what a training checkpoint holds, resuming one, and exporting one as a model folder.

A checkpoint folder holds every rank's DeepSpeed shards (or DDP's state), ``trainer_state.json``
(step, epoch, best validation), ``train_config.json`` (the run's settings), the tokenizer and the
model's config, so it is self-describing: ``export_checkpoint`` needs nothing else to write a
sentence-transformers folder, and a resumed run can be checked against the run it continues.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import MISSING, asdict, fields, is_dataclass, replace
from pathlib import Path

import torch

from common import storage
from common.errors import ConfigError
from train.config import TrainConfig
from train.engine import STATE_TAG
from train.lora import base_model
from train.tasks import TASKS, config_class

log = logging.getLogger(__name__)

# Settings a resumed run must share with the run it resumes (DeepSpeed shards are laid out by them).
RESUME_KEYS = ("model", "dist.strategy", "dist.zero_stage", "dist.num_workers", "optim.batch_size", "optim.grad_accum",
               "grad_cache_chunk", "lora.rank", "dist.precision", "dist.mixed_precision")


def _setting(values, dotted: str):
    """``values``' setting at ``dotted`` (a config object or its saved JSON), None where it has none."""
    for part in dotted.split("."):
        values = values.get(part) if isinstance(values, dict) else getattr(values, part, None)
    return values


def save_checkpoint(engine, validator, state: dict, metrics: dict, cfg: TrainConfig, tokenizer, rank: int,
                    output_uri: str | None = None) -> None:
    """Validate (when on), then save every rank's state and report it to Ray Train as one checkpoint."""
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
            (folder / "train_config.json").write_text(json.dumps({**asdict(cfg), "task": cfg.task}, indent=2))
            tokenizer.save_pretrained(folder / "tokenizer")
            base_model(engine.module).config.save_pretrained(folder / "model_config")
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
    if rank == 0 and output_uri:
        upload_run_files(Path(cfg.output_dir), output_uri)


def restore(engine, cfg: TrainConfig, rank: int, output_dir: Path) -> dict:
    """The trainer state to start from: this run's latest checkpoint after a worker failure (Ray Train
    hands it back), else ``--checkpoints.resume_from``, else a fresh start."""
    import ray.train

    state = {"step": 0, "epoch": 0, "micro_in_epoch": 0, "best": None}
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None and cfg.checkpoints.resume_from:
        checkpoint = ray.train.Checkpoint(cfg.checkpoints.resume_from) if storage.is_uri(cfg.checkpoints.resume_from) \
            else ray.train.Checkpoint.from_directory(cfg.checkpoints.resume_from)
    if checkpoint:
        with checkpoint.as_directory() as folder:
            engine.load(Path(folder))
            state = json.loads((Path(folder) / "trainer_state.json").read_text())
        if rank == 0:
            log.info("[train] resumed at step %d (epoch %d)", state["step"], state["epoch"])
            output_dir.mkdir(parents=True, exist_ok=True)
            (output_dir / "resumed_from.txt").write_text(f"{state['step']}\n")
    return state


def upload_run_files(folder: Path, uri: str) -> None:
    """Rank 0's own files (per-step metrics, TensorBoard, where ranks ran) to the output URI: its
    node's disk may not outlive the run."""
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and (rel.split("/")[0] == "tensorboard" or rel in (
                "metrics.jsonl", "worker_nodes.json", "resumed_from.txt")):
            storage.push_file(path, storage.join(uri, rel))


def check_earlier_run(cfg: TrainConfig, output_uri: str | None = None) -> None:
    """Ray Train resumes a run it finds in OUTPUT/run (what makes a crashed job's rerun lose nothing);
    a run with other settings cannot be resumed, so say so instead of failing inside DeepSpeed."""
    if output_uri:
        configs = [storage.join(c, "train_config.json")
                   for c in storage.list_dir(storage.join(output_uri, "run"), "checkpoint_")]
        saved = [storage.read_text(c) for c in configs if storage.exists(c)]
    else:
        saved = [p.read_text() for p in sorted((Path(cfg.output_dir) / "run").glob("checkpoint_*/train_config.json"))]
    if not saved:
        return
    before = json.loads(saved[-1])
    changed = [k for k in RESUME_KEYS if _setting(before, k) != _setting(cfg, k)]
    if changed:
        raise ConfigError("output_dir", f"{cfg.output_dir} holds an earlier training run with other settings "
                          f"({', '.join(f'{k}={_setting(before, k)!r} there, {_setting(cfg, k)!r} now' for k in changed)}), "
                          "which Ray Train would try to resume", "pass a new --output_dir, or that run's settings "
                          "to resume it")
    log.info("[train] resuming the earlier run in %s (same settings)", Path(cfg.output_dir) / "run")


def saved_config(folder: Path) -> TrainConfig:
    """The config a checkpoint was written under, of its task's class (settings it no longer knows are
    dropped)."""
    saved = json.loads((Path(folder) / "train_config.json").read_text())
    cls = config_class(saved.pop("task", None))
    nested: dict = {}
    for key, value in saved.items():  # a checkpoint from before components holds flat settings
        head, _, rest = cls.RENAMED.get(key, key).partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        elif isinstance(value, dict):
            nested.setdefault(head, {}).update(value)
        else:
            nested[head] = value
    return _known(cls, nested)


def _known(cls, values: dict):
    """``cls`` built from ``values``, components too, dropping settings it no longer knows."""
    kwargs = {}
    for f in fields(cls):  # not ``__dataclass_fields__``: that holds the ``task`` ClassVar too
        if f.name not in values:
            continue
        value = values[f.name]
        default = f.default_factory() if f.default_factory is not MISSING else None
        if isinstance(value, dict) and is_dataclass(default):  # a component: its owner's defaults, then the saved
            known = {g.name for g in fields(default)}
            value = replace(default, **{k: v for k, v in value.items() if k in known})
        kwargs[f.name] = value
    return cls(**kwargs)


def export_checkpoint(checkpoint_dir: Path, out: Path) -> Path:
    """Turn a training checkpoint (any strategy, any ZeRO stage, any task) into the folder its task
    exports (a sentence-transformers ``SentenceTransformer`` or ``CrossEncoder`` folder)."""
    import transformers
    from transformers import AutoConfig, AutoTokenizer

    folder = Path(checkpoint_dir)
    cfg = saved_config(folder)
    task = TASKS[cfg.task]
    model = getattr(transformers, task.model_loader).from_config(AutoConfig.from_pretrained(folder / "model_config"))
    if cfg.dist.strategy == "ddp":
        weights = torch.load(folder / "ddp_state.pt", map_location="cpu", weights_only=False)["model"]
    elif not any((folder / STATE_TAG).glob("*zero_pp_rank_*_optim_states.pt")):  # ran as ZeRO-0, fp32 weights
        weights = torch.load(folder / STATE_TAG / "mp_rank_00_model_states.pt", map_location="cpu",
                             weights_only=False)["module"]
    else:
        from deepspeed.utils.zero_to_fp32 import (
            get_fp32_state_dict_from_zero_checkpoint,
        )

        weights = get_fp32_state_dict_from_zero_checkpoint(str(folder), tag=STATE_TAG)
    weights = {k: v.float() for k, v in weights.items()}
    model, missing, unexpected = task.load_weights(cfg, model, weights)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise RuntimeError(f"checkpoint {folder} does not match its model: missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]}")
    state = json.loads((folder / "trainer_state.json").read_text())
    return task.export(cfg, model, AutoTokenizer.from_pretrained(folder / "tokenizer"), out, state)
