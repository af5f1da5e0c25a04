"""The training config: one typed object for the CLI, `ray job submit`, a recipe YAML and tests.

Its defaults are the best recipe measured on Home Depot (benchmarks/RESULTS.md): batch 128, lr 5e-5,
positives from relevance 2.33, one hard negative per pair (judged, else mined), batches grouped by
length, bf16 where the hardware has it, a validated checkpoint every 90 steps. `train/recipe.yaml`
writes the same recipe out as a file. Every incompatible setting raises
:class:`~common.errors.ConfigError` before any worker starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from common.config import check_choice, check_range
from common.errors import ConfigError
from common.hardware import check_use_gpu, cpu_has_bf16, gpu_choice, gpu_has_bf16
from common.storage import is_uri
from model.folders import DEFAULT_MODEL, is_ensemble, resolve_model_path


def cluster_has_gpus() -> bool:
    """GPUs in the Ray cluster this process joined, else on this machine."""
    import ray

    if ray.is_initialized():
        return ray.cluster_resources().get("GPU", 0) > 0
    import torch

    return torch.cuda.is_available()


# --hard-negatives: every mode, those that use judged negatives, those that mine near-misses
HARD_NEGATIVE_MODES = ("none", "judged", "mined", "both")
JUDGED_MODES = ("judged", "both")
MINED_MODES = ("mined", "both")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class TrainConfig:
    task: ClassVar[str] = "encoder"  # what is trained (train/tasks/): the bi-encoder here, the reranker in a subclass

    prepared_dir: str | None = field(default=None, metadata={"help": "output of `prepare` (train/val splits)"})
    output_dir: str | None = field(default=None, metadata={"help": "default: PREPARED/../train"})
    model: str = field(default=DEFAULT_MODEL, metadata={"help": "encoder to start from (folder or hub name)"})
    query_max_length: int = field(default=32, metadata={"help": "tokens kept per query"})
    product_max_length: int = field(default=64, metadata={"help": "tokens kept per product text"})
    # optimisation
    epochs: int = field(default=1, metadata={"help": "passes over the training pairs"})
    max_steps: int = field(default=0, metadata={"help": "stop after this many optimizer steps (0 = all epochs)"})
    batch_size: int = field(default=128, metadata={"help": "pairs per worker per micro-batch"})
    grad_accum: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    grad_cache_chunk: int = field(default=0, metadata={
        "help": "cached-gradient (GradCache) mode: texts per forward pass, while every query still sees the "
                "negatives of the whole --batch-size of every worker (0 = off)"})
    length_window: int = field(default=16, metadata={
        "help": "sort this many micro-batches by product-text length and re-cut them, so each pads less "
                "(faster; the same pairs and steps, other in-batch neighbours; 0 or 1 = off)"})
    lr: float = field(default=5e-5, metadata={"help": "peak learning rate (AdamW)"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    warmup_ratio: float = field(default=0.1, metadata={"help": "share of steps spent warming up"})
    schedule: str = field(default="linear", metadata={"help": "linear or cosine decay after warmup"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping (0 = off)"})
    scale: float = field(default=20.0, metadata={"help": "InfoNCE inverse temperature"})
    symmetric_loss: bool = field(default=False, metadata={
        "help": "also let each positive product pick its query among the batch's queries (loss averaged)"})
    mask_duplicates: bool = field(default=True, metadata={
        "help": "never use another positive of the same query, or a copy of the query's product, as its negative"})
    dropout: bool = field(default=True, metadata={
        "help": "train with the pretrained model's dropout, as sentence-transformers does (false: dropout off)"})
    seed: int = field(default=2026, metadata={"help": "shuffling and initialisation seed"})
    max_pairs: int = field(default=0, metadata={"help": "train on the first N shuffled pairs only (0 = all)"})
    pretokenize: bool = field(default=True, metadata={
        "help": "tokenise all pairs before training starts, so training has every core (false: Ray Data "
                "tokenises beside training, for pair sets larger than the object store)"})
    # pairs
    train_splits: str = field(default="train", metadata={
        "help": "prepared splits to train on: train, or train,val for a final model once settings are "
                "chosen on val (validation must then be off: --val-queries 0)"})
    positive_at: float = field(default=2.33, metadata={"help": "relevance from which a judged product is a positive"})
    hard_negatives: str = field(default="both", metadata={
        "help": "one per pair: none; judged (judged <= negative_at); mined (a near-miss from the zero-shot "
                "index); both (judged where the query has one, else mined)"})
    mine_index_dir: str | None = field(default=None, metadata={
        "help": "zero-shot index to mine near-misses from (the output of `index`); default PREPARED/../index"})
    mine_depth: int = field(default=30, metadata={"help": "mined negatives come from the top this many"})
    mine_skip: int = field(default=3, metadata={"help": "top results never used as mined negatives"})
    negative_at: float = field(default=1.67, metadata={"help": "relevance up to which a judged product is a hard negative"})
    # parameter-efficient fine-tuning
    lora_rank: int = field(default=0, metadata={"help": "LoRA adapter rank (0 = train every weight)"})
    lora_alpha: float = field(default=32.0, metadata={"help": "LoRA scaling numerator (update scale alpha/rank)"})
    lora_dropout: float = field(default=0.05, metadata={"help": "dropout on the LoRA adapter input"})
    lora_targets: str = field(default="query,key,value,dense", metadata={
        "help": "comma-separated names of the linear layers that get adapters"})
    # distribution
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
    use_gpu: str = field(default="auto", metadata={
        "help": "one GPU per worker: auto (where the Ray cluster has GPUs), yes or no"})
    cpus_per_worker: float = field(default=1.0, metadata={"help": "CPUs each worker reserves (0.5 fits 2 on 2 cores)"})
    placement_strategy: str = field(default="PACK", metadata={
        "help": "how workers spread over nodes: PACK, SPREAD, STRICT_PACK or STRICT_SPREAD (one per node)"})
    # checkpoints and validation
    checkpoint_every: int = field(default=90, metadata={
        "help": "optimizer steps between checkpoints, each validated (0 = each epoch)"})
    report_every: int = field(default=50, metadata={
        "help": "optimizer steps between metric reports to Ray (every step still goes to TensorBoard)"})
    keep_checkpoints: int = field(default=2, metadata={"help": "checkpoints kept (best by validation nDCG@10)"})
    max_failures: int = field(default=0, metadata={"help": "worker failures to recover from automatically"})
    resume_from: str | None = field(default=None, metadata={"help": "checkpoint folder to resume from"})
    val_queries: int = field(default=200, metadata={"help": "validation queries scored at each checkpoint (0 = off)"})
    val_products: int = field(default=5000, metadata={"help": "catalogue sample (plus judged products) for validation"})
    early_stopping_patience: int = field(default=0, metadata={
        "help": "stop after this many checkpoints without a better validation nDCG@10 (0 = never)"})
    fail_at_step: int = field(default=0, metadata={"cli": False, "help": "tests only: raise once at this step"})

    def __post_init__(self):
        self.use_gpu = gpu_choice(self.use_gpu)  # recipes written with true/false still load

    @property
    def gpu(self) -> bool:
        """Whether workers train on GPUs: ``use_gpu`` with auto decided (the driver decides it once, from
        the Ray cluster's resources, before any worker starts)."""
        if self.use_gpu != "auto":
            return self.use_gpu == "yes"
        return cluster_has_gpus()

    @property
    def splits(self) -> list[str]:
        """The prepared splits whose judgments become training pairs (from --train-splits)."""
        return [x for x in self.train_splits.split(",") if x]

    @property
    def mines(self) -> bool:
        """Some hard negatives are mined near-misses (from the zero-shot index, which must then exist)."""
        return self.hard_negatives in MINED_MODES

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
        """bf16 by autocast over fp32 weights (see --mixed-precision)."""
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

    def validate(self) -> None:
        """Every check: the settings, then the folders they name."""
        self.validate_settings()
        self.validate_paths()

    def validate_settings(self) -> None:
        """The checks that need no file (the demo runs them before its first stage)."""
        check_choice("strategy", self.strategy, ("deepspeed", "ddp"))
        if self.zero_stage not in (0, 1, 2, 3):
            raise ConfigError("zero_stage", f"{self.zero_stage} is not a DeepSpeed ZeRO stage",
                              "use 0, 1, 2 or 3 (2 shards gradients and optimizer state; 3 also parameters)")
        check_choice("precision", self.precision, PRECISIONS)
        precision = self.resolved_precision()
        if precision == "fp16" and not self.gpu:
            raise ConfigError("precision", "fp16 needs a GPU (CPU kernels and DeepSpeed's loss scaling are GPU-only)",
                              "use --precision bf16 or fp32 on CPU, or --use-gpu yes")
        check_choice("mixed_precision", self.mixed_precision, ("auto", "autocast", "weights"))
        if precision == "fp16" and self.mixed_precision == "autocast":
            raise ConfigError("mixed_precision", "fp16 runs as 16-bit weights with DeepSpeed's loss scaling",
                              "use --mixed-precision auto or weights with fp16, or --precision bf16 for autocast")
        if self.strategy == "deepspeed" and self.autocast and self.zero_stage_in_use == 1 and self.max_grad_norm:
            # DeepSpeed 0.19's ZeRO-1 optimizer fails computing the clipping norm under torch_autocast.
            raise ConfigError("zero_stage", "ZeRO-1 with bf16 autocast and gradient clipping fails inside DeepSpeed",
                              "use --zero-stage 2 (or 0), --mixed-precision weights, or --max-grad-norm 0")
        if self.strategy == "deepspeed" and precision != "fp32" and not self.autocast and self.zero_stage == 0:
            # ZeRO-0 keeps the fp32 master weights inside DeepSpeed's optimizer wrapper only; the
            # checkpoint's model weights are rounded to 16 bits, and the export would ship those.
            raise ConfigError("zero_stage", f"{precision} with ZeRO stage 0 checkpoints 16-bit weights only",
                              f"use --zero-stage 1 or 2 with --precision {precision}: the export then "
                              "reads the fp32 master weights from the shards")
        if self.strategy == "ddp" and precision == "bf16" and not self.gpu:
            raise ConfigError("precision", "bf16 with the ddp strategy is only offered on GPU",
                              "use --strategy deepspeed for bf16 on CPU, or fp32")
        if self.grad_accum < 1:
            raise ConfigError("grad_accum", f"{self.grad_accum} micro-batches per step",
                              "use 1 or more (1 = no accumulation)")
        check_choice("schedule", self.schedule, ("linear", "cosine"))
        if self.grad_cache_chunk:
            if self.grad_accum != 1:
                raise ConfigError("grad_cache_chunk", "cached gradients replace accumulation",
                                  "use --grad-accum 1 and a larger --batch-size (that is the point of the mode)")
            if self.grad_cache_chunk < 0 or self.batch_size % self.grad_cache_chunk:
                raise ConfigError("grad_cache_chunk", f"{self.grad_cache_chunk} does not divide the batch size "
                                  f"{self.batch_size}", "pick a chunk that divides --batch-size, e.g. 32 for 256")
        check_use_gpu("use_gpu", self.use_gpu)
        check_choice("placement_strategy", self.placement_strategy, ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"))
        check_choice("hard_negatives", self.hard_negatives, HARD_NEGATIVE_MODES)
        if self.mines:
            check_range("mine_skip", self.mine_skip, 0, self.mine_depth - 1)
        for name in ("epochs", "batch_size", "num_workers", "query_max_length", "product_max_length",
                     "keep_checkpoints", "report_every"):
            check_range(name, getattr(self, name), 1)
        check_range("lr", self.lr, 0.0, low_inclusive=False)
        check_range("length_window", self.length_window, 0)
        check_range("lora_rank", self.lora_rank, 0)
        if self.lora_rank:
            check_range("lora_alpha", self.lora_alpha, 0.0, low_inclusive=False)
            check_range("lora_dropout", self.lora_dropout, 0.0, 1.0)
            if not self.lora_targets.strip(","):
                raise ConfigError("lora_targets", "is empty", "name the linear layers, e.g. query,key,value,dense")
        check_range("warmup_ratio", self.warmup_ratio, 0.0, 1.0)
        check_range("cpus_per_worker", self.cpus_per_worker, 0.0, low_inclusive=False)
        splits = self.splits
        if not splits or set(splits) - {"train", "val"} or "train" not in splits:
            raise ConfigError("train_splits", f"{self.train_splits!r} is not a choice", "use train or train,val")
        if "val" in splits and self.val_queries:
            raise ConfigError("train_splits", "training on val while validating on it would pick checkpoints "
                              "by queries the model was trained on", "add --val-queries 0 (the last step is kept)")

    def validate_paths(self) -> None:
        """The checks of the folders and models the config names (cloud URIs are checked where training
        fetches them, train.driver)."""
        if not self.prepared_dir:
            raise ConfigError("prepared_dir", "is not set", "pass --prepared-dir (the output of prepare)")
        for split in ("train", "val"):
            if not is_uri(self.prepared_dir) and not (Path(self.prepared_dir) / "judgments" / split).is_dir():
                raise ConfigError("prepared_dir", f"{self.prepared_dir} has no {split} split",
                                  "run `firstlight prepare` and pass its output folder")
        path = resolve_model_path(self.model)
        if is_ensemble(path):
            raise ConfigError("model", f"{self.model} is an ensemble of encoders, which does not train further",
                              "fine-tune one of its members (or the encoders it was built from), then rebuild it")
        if Path(self.model).expanduser().exists() is False and path == self.model and "/" not in self.model:
            raise ConfigError("model", f"{self.model!r} is neither a folder nor a hub name (owner/name)",
                              "pass an existing model folder or a hub name")
        if self.resume_from and not is_uri(self.resume_from) and not (Path(self.resume_from) /
                                                                      "trainer_state.json").exists():
            raise ConfigError("resume_from", f"{self.resume_from} is not a FirstLight training checkpoint "
                              "(no trainer_state.json)", "pass a checkpoint_* folder from a training run")
        if self.mines and not is_uri(self.prepared_dir):
            if not self.mine_index_dir:
                self.mine_index_dir = str(Path(self.prepared_dir).parent / "index")
            if not is_uri(self.mine_index_dir) and not (Path(self.mine_index_dir) / "index.faiss").exists():
                raise ConfigError("mine_index_dir", f"no zero-shot index in {self.mine_index_dir} to mine negatives from",
                                  "run `firstlight embed` and `firstlight index` first (or `firstlight demo`), "
                                  "or pass --mine-index-dir")

    def resolved_output_dir(self) -> Path:
        return Path(self.output_dir) if self.output_dir else Path(self.prepared_dir).parent / "train"
