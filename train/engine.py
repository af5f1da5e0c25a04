"""The training engine: DeepSpeed (ZeRO 0-3, bf16/fp16, accumulation) or DDP behind one small interface.

The loop (``train.loop``), the tasks' losses and the step strategies (``train.steps``) see only
``forward``, ``backward_step``, ``lr``, ``save`` and ``load``; which strategy runs underneath is the
config's business, and which model it trains is the task's (``train.tasks``).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from train.config import TrainConfig

STATE_TAG = "state"  # the DeepSpeed checkpoint tag inside each checkpoint folder
_NO_DECAY = ("bias", "LayerNorm.weight")


def attention_for(cfg: TrainConfig) -> str | None:
    """The attention implementation to train with. On CPU, PyTorch's fused (flash) attention backward
    is slow in bf16: MiniLM's backward took 238-276 ms a step with it against 131-148 in the plain
    matrix-product form (with dropout on, the fused kernel falls back to that form anyway). GPUs keep
    transformers' own choice."""
    return None if cfg.dist.gpu else "eager"


def optimizer_groups(named_parameters, weight_decay: float) -> list[dict]:
    """AdamW groups: weight decay on weights, none on biases and LayerNorm (as BERT trained).
    Frozen parameters (LoRA's base weights) are left out."""
    decay, plain = [], []
    for name, param in named_parameters:
        if param.requires_grad:
            (plain if name.endswith(_NO_DECAY) else decay).append(param)
    return [g for g in ({"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0})
            if g["params"]]


def deepspeed_config(cfg: TrainConfig, world_size: int) -> dict:
    micro, steps = cfg.micro_steps()
    return {
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": steps,
        "train_batch_size": micro * steps * world_size,
        "gradient_clipping": cfg.optim.max_grad_norm,
        "zero_optimization": {"stage": cfg.dist.zero_stage_in_use},
        # autocast: fp32 weights and optimizer, bf16 matrix products; else 16-bit weights + fp32 masters
        "torch_autocast": {"enabled": cfg.dist.autocast, "dtype": "bfloat16"},
        "bf16": {"enabled": cfg.dist.precision == "bf16" and not cfg.dist.autocast},
        "fp16": {"enabled": cfg.dist.precision == "fp16"},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }


def _scheduler(optimizer, cfg: TrainConfig, total_steps: int):
    from transformers import (
        get_cosine_schedule_with_warmup,
        get_linear_schedule_with_warmup,
    )

    warmup = int(cfg.optim.warmup_ratio * total_steps)
    make = get_cosine_schedule_with_warmup if cfg.optim.schedule == "cosine" else get_linear_schedule_with_warmup
    return make(optimizer, warmup, total_steps)


class Engine:
    """DeepSpeed and DDP behind one small interface: forward, backward+step, save, load."""

    def __init__(self, cfg: TrainConfig, model, total_steps: int, world_size: int):
        self.cfg = cfg
        # The fused kernel (CPU and GPU): one pass over all parameters instead of a loop of small ops.
        optimizer = torch.optim.AdamW(optimizer_groups(model.named_parameters(), cfg.optim.weight_decay), lr=cfg.optim.lr,
                                      fused=True)
        scheduler = _scheduler(optimizer, cfg, total_steps)
        if cfg.dist.strategy == "deepspeed":
            import deepspeed

            self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
                model=model, optimizer=optimizer, lr_scheduler=scheduler,
                config=deepspeed_config(cfg, world_size), dist_init_required=False)
            if world_size == 1 and cfg.dist.zero_stage_in_use == 0:
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

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, **inputs: torch.Tensor):
        """The model's output for a batch, padding shared by the whole batch trimmed; (output, the
        trimmed mask on the model's device). ``inputs``: more token-aligned tensors (token types)."""
        length = int(mask.sum(dim=1).max().item())
        mask = mask[:, :length].to(self.device)
        extra = {k: v[:, :length].to(self.device) for k, v in inputs.items()}
        return self.engine(input_ids=ids[:, :length].to(self.device), attention_mask=mask, **extra), mask

    def backward_step(self, loss: torch.Tensor, whole: bool = False) -> bool:
        """Backward and (on an accumulation boundary) step; True when the optimizer stepped.

        ``whole``: ``loss`` already carries its full weight (a cached-gradient chunk), so it is not
        divided by the number of micro-steps."""
        _, steps = self.cfg.micro_steps()
        if self.cfg.dist.strategy == "deepspeed":
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
        if self.cfg.optim.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.engine.parameters(), self.cfg.optim.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return True

    def lr(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    def save(self, folder: Path, rank: int) -> None:
        if self.cfg.dist.strategy == "deepspeed":
            self.engine.save_checkpoint(str(folder), tag=STATE_TAG)  # each rank writes its own shards
        elif rank == 0:
            torch.save({"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                        "scheduler": self.scheduler.state_dict()}, folder / "ddp_state.pt")

    def load(self, folder: Path) -> None:
        if self.cfg.dist.strategy == "deepspeed":
            self.engine.load_checkpoint(str(folder), tag=STATE_TAG)
        else:
            state = torch.load(folder / "ddp_state.pt", map_location=self.device, weights_only=False)
            self.module.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
