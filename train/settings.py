"""The settings every training task shares, as components its config composes: ``optim`` (how the
weights move), ``dist`` (where and in what precision the workers run), ``checkpoints`` (what is saved,
validated and resumed) and ``data`` (which judged pairs become examples).

A task's config (train/config.py, train/rerank_config.py) owns one of each and sets its own defaults
through the component's constructor, never by redefining fields. Each component checks its own
values; ``check_together`` checks the relations that span two of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common.config import check_choice, check_range
from common.errors import ConfigError
from common.hardware import (
    GpuChoice,
    check_use_gpu,
    cpu_has_bf16,
    gpu_choice,
    gpu_has_bf16,
)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def cluster_has_gpus() -> bool:
    """GPUs in the Ray cluster this process joined, else on this machine."""
    import ray

    if ray.is_initialized():
        return ray.cluster_resources().get("GPU", 0) > 0
    import torch

    return torch.cuda.is_available()


@dataclass
class Optimisation:
    """AdamW with warmup and decay, over micro-batches of ``batch_size`` examples per worker."""

    epochs: int = field(default=1, metadata={"help": "passes over the training examples"})
    max_steps: int = field(default=0, metadata={"help": "stop after this many optimizer steps (0 = all epochs)"})
    batch_size: int = field(default=128, metadata={
        "help": "examples per worker per micro-batch (bi-encoder: pairs; reranker: queries x group_size pairs)"})
    grad_accum: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    lr: float = field(default=5e-5, metadata={"help": "peak learning rate (AdamW)"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    warmup_ratio: float = field(default=0.1, metadata={"help": "share of steps spent warming up"})
    schedule: str = field(default="linear", metadata={"help": "linear or cosine decay after warmup"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping (0 = off)"})
    dropout: bool = field(default=True, metadata={
        "help": "train with the pretrained model's dropout, as sentence-transformers does (false: dropout off)"})
    seed: int = field(default=2026, metadata={"help": "shuffling and initialisation seed"})

    def validate(self, prefix: str = "optim.") -> None:
        for name in ("epochs", "batch_size", "grad_accum"):
            check_range(prefix + name, getattr(self, name), 1)
        check_range(prefix + "max_steps", self.max_steps, 0)
        check_range(prefix + "lr", self.lr, 0.0, low_inclusive=False)
        check_range(prefix + "warmup_ratio", self.warmup_ratio, 0.0, 1.0)
        check_range(prefix + "max_grad_norm", self.max_grad_norm, 0.0)
        check_choice(prefix + "schedule", self.schedule, ("linear", "cosine"))


@dataclass
class Distribution:
    """Ray Train workers, the engine that syncs them, and the precision they compute in."""

    strategy: str = field(default="deepspeed", metadata={"help": "deepspeed or ddp"})
    zero_stage: int = field(default=2, metadata={"help": "DeepSpeed ZeRO stage 0-3"})
    precision: str = field(default="auto", metadata={
        "help": "fp32, bf16 (GPU or CPU), fp16 (GPU only) or auto: bf16 on CPUs with bf16 units (AMX / AVX512-BF16: "
                "twice as fast, same quality) and on GPUs that support it, else fp32"})
    mixed_precision: str = field(default="auto", metadata={
        "help": "how bf16 runs: autocast (fp32 weights, bf16 matrix products through DeepSpeed's torch_autocast; "
                "fastest on CPU), weights (DeepSpeed's 16-bit weights with fp32 master copies; half the weight "
                "memory), auto (autocast on CPU, weights on GPU); fp16 always runs as weights"})
    num_workers: int = field(default=1, metadata={"help": "Ray Train workers"})
    use_gpu: GpuChoice = field(default="auto", metadata={
        "help": "one GPU per worker: auto (where the Ray cluster has GPUs), yes or no"})
    cpus_per_worker: float = field(default=1.0, metadata={"help": "CPUs each worker reserves (0.5 fits 2 on 2 cores)"})
    placement_strategy: str = field(default="PACK", metadata={
        "help": "how workers spread over nodes: PACK, SPREAD, STRICT_PACK or STRICT_SPREAD (one per node)"})

    def __post_init__(self):
        self.use_gpu = gpu_choice(self.use_gpu)  # recipes written with true/false still load

    @property
    def gpu(self) -> bool:
        """Whether workers train on GPUs: ``use_gpu`` with auto decided (the driver decides it once, from
        the Ray cluster's resources, before any worker starts)."""
        if self.use_gpu != "auto":
            return self.use_gpu == "yes"
        return cluster_has_gpus()

    def resolved_precision(self) -> str:
        """``precision`` with ``auto`` decided for this machine (the driver's: workers are assumed alike)."""
        if self.precision != "auto":
            return self.precision
        if self.gpu:
            return "bf16" if gpu_has_bf16() else "fp32"
        # bf16 on CPU runs as autocast under DeepSpeed; emulated (slower) on CPUs without bf16 units
        return "bf16" if self.strategy == "deepspeed" and cpu_has_bf16() else "fp32"

    @property
    def autocast(self) -> bool:
        """bf16 by autocast over fp32 weights (see ``mixed_precision``)."""
        if self.resolved_precision() != "bf16":
            return False
        return self.mixed_precision == "autocast" or (self.mixed_precision == "auto" and not self.gpu)

    @property
    def zero_stage_in_use(self) -> int:
        """The ZeRO stage DeepSpeed runs. ZeRO shards state across workers: one worker has nothing to
        shard, and stages 1-3 would only add partition copies (+16% a step in fp32 on CPU, +50% with
        autocast). Kept when a lone worker holds 16-bit weights: ZeRO-0 would checkpoint only those."""
        if self.num_workers == 1 and (self.resolved_precision() == "fp32" or self.autocast):
            return 0
        return self.zero_stage

    def validate(self, prefix: str = "dist.") -> None:
        check_choice(prefix + "strategy", self.strategy, ("deepspeed", "ddp"))
        if self.zero_stage not in (0, 1, 2, 3):
            raise ConfigError(prefix + "zero_stage", f"{self.zero_stage} is not a DeepSpeed ZeRO stage",
                              "use 0, 1, 2 or 3 (2 shards gradients and optimizer state; 3 also parameters)")
        check_choice(prefix + "precision", self.precision, PRECISIONS)
        check_use_gpu(prefix + "use_gpu", self.use_gpu)
        precision = self.resolved_precision()
        if precision == "fp16" and not self.gpu:
            raise ConfigError(prefix + "precision", "fp16 needs a GPU (CPU kernels and DeepSpeed's loss "
                              "scaling are GPU-only)", f"use --{prefix}precision bf16 or fp32 on CPU, "
                              f"or --{prefix}use_gpu yes")
        check_choice(prefix + "mixed_precision", self.mixed_precision, ("auto", "autocast", "weights"))
        if precision == "fp16" and self.mixed_precision == "autocast":
            raise ConfigError(prefix + "mixed_precision", "fp16 runs as 16-bit weights with DeepSpeed's loss scaling",
                              f"use --{prefix}mixed_precision auto or weights with fp16, or "
                              f"--{prefix}precision bf16 for autocast")
        if self.strategy == "deepspeed" and precision != "fp32" and not self.autocast and self.zero_stage == 0:
            # ZeRO-0 keeps the fp32 master weights inside DeepSpeed's optimizer wrapper only; the
            # checkpoint's model weights are rounded to 16 bits, and the export would ship those.
            raise ConfigError(prefix + "zero_stage", f"{precision} with ZeRO stage 0 checkpoints 16-bit weights only",
                              f"use --{prefix}zero_stage 1 or 2 with --{prefix}precision {precision}: the "
                              "export then reads the fp32 master weights from the shards")
        if self.strategy == "ddp" and precision == "bf16" and not self.gpu:
            raise ConfigError(prefix + "precision", "bf16 with the ddp strategy is only offered on GPU",
                              f"use --{prefix}strategy deepspeed for bf16 on CPU, or fp32")
        check_range(prefix + "num_workers", self.num_workers, 1)
        check_range(prefix + "cpus_per_worker", self.cpus_per_worker, 0.0, low_inclusive=False)
        check_choice(prefix + "placement_strategy", self.placement_strategy,
                     ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"))


@dataclass
class Checkpointing:
    """Validated checkpoints, the best kept; recovery and resumption start from them."""

    every: int = field(default=90, metadata={"help": "optimizer steps between checkpoints, each validated (0 = each epoch)"})
    keep: int = field(default=2, metadata={"help": "checkpoints kept (best by validation nDCG@10)"})
    report_every: int = field(default=50, metadata={
        "help": "optimizer steps between metric reports to Ray (every step still goes to TensorBoard)"})
    val_queries: int = field(default=200, metadata={"help": "validation queries scored at each checkpoint (0 = off)"})
    val_products: int = field(default=5000, metadata={"help": "catalogue sample (plus judged products) for validation"})
    early_stopping_patience: int = field(default=0, metadata={
        "help": "stop after this many checkpoints without a better validation nDCG@10 (0 = never)"})
    max_failures: int = field(default=0, metadata={"help": "worker failures to recover from automatically"})
    resume_from: str | None = field(default=None, metadata={"help": "checkpoint folder to resume from"})

    def validate(self, prefix: str = "checkpoints.") -> None:
        for name in ("keep", "report_every"):
            check_range(prefix + name, getattr(self, name), 1)
        for name in ("every", "val_queries", "val_products", "early_stopping_patience", "max_failures"):
            check_range(prefix + name, getattr(self, name), 0)


@dataclass
class TrainData:
    """Which prepared judgments become training examples."""

    splits: str = field(default="train", metadata={
        "help": "prepared splits to train on: train, or train,val for a final model once settings are "
                "chosen on val (validation must then be off: --checkpoints.val_queries 0)"})
    positive_at: float = field(default=2.33, metadata={"help": "relevance from which a judged product is a positive"})
    max_pairs: int = field(default=0, metadata={"help": "train on the first N shuffled pairs only (0 = all)"})
    max_queries: int = field(default=0, metadata={
        "help": "the label budget: train on the judgments of N queries drawn at random (optim.seed) from the "
                "training splits, every judgment of each (0 = all); one epoch is then proportionally fewer steps"})
    pretokenize: bool = field(default=True, metadata={
        "help": "tokenise all examples before training starts, so training has every core (false: Ray Data "
                "tokenises beside training, for example sets larger than the object store)"})

    @property
    def split_names(self) -> list[str]:
        return [x for x in self.splits.split(",") if x]

    def validate(self, prefix: str = "data.") -> None:
        names = self.split_names
        if not names or set(names) - {"train", "val"} or "train" not in names:
            raise ConfigError(prefix + "splits", f"{self.splits!r} is not a choice", "use train or train,val")
        check_range(prefix + "max_pairs", self.max_pairs, 0)
        check_range(prefix + "max_queries", self.max_queries, 0)

    def budgeted(self, judgments, seed: int):
        """``judgments`` of at most ``max_queries`` queries, drawn by query (a query's judgments come
        whole: what labelling N queries buys), the same draw for the same seed."""
        if not self.max_queries:
            return judgments
        queries = sorted(judgments["query"].unique())
        if self.max_queries >= len(queries):
            return judgments
        import numpy as np

        chosen = set(np.random.default_rng(seed).choice(queries, size=self.max_queries, replace=False))
        return judgments[judgments["query"].isin(chosen)].reset_index(drop=True)


def check_together(optim: Optimisation, dist: Distribution, checkpoints: Checkpointing, data: TrainData) -> None:
    """The relations between components."""
    if dist.strategy == "deepspeed" and dist.autocast and dist.zero_stage_in_use == 1 and optim.max_grad_norm:
        # DeepSpeed 0.19's ZeRO-1 optimizer fails computing the clipping norm under torch_autocast.
        raise ConfigError("dist.zero_stage", "ZeRO-1 with bf16 autocast and gradient clipping fails inside DeepSpeed",
                          "use --dist.zero_stage 2 (or 0), --dist.mixed_precision weights, or --optim.max_grad_norm 0")
    if "val" in data.split_names and checkpoints.val_queries:
        raise ConfigError("data.splits", "training on val while validating on it would pick checkpoints "
                          "by queries the model was trained on", "add --checkpoints.val_queries 0 (the last step is kept)")


def flat_names(components: dict[str, type]) -> dict[str, str]:
    """``{"lr": "optim.lr", ...}``: where each setting of the flat configs before components now lives
    (an old recipe or flag is answered with its new name)."""
    from dataclasses import fields

    renamed = {"checkpoint_every": "checkpoints.every", "keep_checkpoints": "checkpoints.keep",
               "train_splits": "data.splits"}
    for owner, cls in components.items():
        for f in fields(cls):
            renamed.setdefault(f.name, f"{owner}.{f.name}")
    return renamed
