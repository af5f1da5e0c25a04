"""The bi-encoder's training config: one typed object for the CLI, `ray job submit`, a recipe YAML
and tests. It composes the components every training task shares (train/settings.py: ``optim``,
``dist``, ``checkpoints``, ``data``) and adds the bi-encoder's own settings: token lengths, the
InfoNCE loss, hard negatives, LoRA.

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
from common.storage import is_uri
from model.folders import DEFAULT_MODEL, is_ensemble, resolve_model_path
from train.event_pairs import ClickPairs
from train.lora import LoRA
from train.settings import (
    Checkpointing,
    Distribution,
    Optimisation,
    TrainData,
    check_together,
    flat_names,
)

# hard_negatives: every mode, those that use judged negatives, those that mine near-misses
HARD_NEGATIVE_MODES = ("none", "judged", "mined", "both")
JUDGED_MODES = ("judged", "both")
MINED_MODES = ("mined", "both")
PAIR_SOURCES = ("judged", "synthetic")


@dataclass
class TrainConfig:
    task: ClassVar[str] = "encoder"  # what is trained (train/tasks/): the bi-encoder; RerankerConfig the reranker
    # where each setting of the flat config before components lives now
    RENAMED: ClassVar[dict] = flat_names({"optim": Optimisation, "dist": Distribution,
                                          "checkpoints": Checkpointing, "data": TrainData,
                                          "lora": LoRA}) | {f"lora_{n}": f"lora.{n}" for n in
                                                            ("rank", "alpha", "dropout", "targets")}

    prepared_dir: str | None = field(default=None, metadata={"help": "output of `prepare` (train/val splits)"})
    output_dir: str | None = field(default=None, metadata={"help": "default: PREPARED/../train"})
    model: str = field(default=DEFAULT_MODEL, metadata={"help": "encoder to start from (folder or hub name)"})
    query_max_length: int = field(default=32, metadata={"help": "tokens kept per query"})
    product_max_length: int = field(default=64, metadata={"help": "tokens kept per product text"})
    optim: Optimisation = field(default_factory=Optimisation)
    dist: Distribution = field(default_factory=Distribution)
    checkpoints: Checkpointing = field(default_factory=Checkpointing)
    data: TrainData = field(default_factory=TrainData)
    # the bi-encoder's loss and batches
    scale: float = field(default=20.0, metadata={"help": "InfoNCE inverse temperature"})
    symmetric_loss: bool = field(default=False, metadata={
        "help": "also let each positive product pick its query among the batch's queries (loss averaged)"})
    mask_duplicates: bool = field(default=True, metadata={
        "help": "never use another positive of the same query, or a copy of the query's product, as its negative"})
    grad_cache_chunk: int = field(default=0, metadata={
        "help": "cached-gradient (GradCache) mode: texts per forward pass, while every query still sees the "
                "negatives of the whole optim.batch_size of every worker (0 = off)"})
    length_window: int = field(default=16, metadata={
        "help": "sort this many micro-batches by product-text length and re-cut them, so each pads less "
                "(faster; the same pairs and steps, other in-batch neighbours; 0 or 1 = off)"})
    # hard negatives
    hard_negatives: str = field(default="both", metadata={
        "help": "one per pair: none; judged (judged <= negative_at); mined (a near-miss from the zero-shot "
                "index); both (judged where the query has one, else mined)"})
    negative_at: float = field(default=1.67, metadata={"help": "relevance up to which a judged product is a hard negative"})
    mine_index_dir: str | None = field(default=None, metadata={
        "help": "zero-shot index to mine near-misses from (the output of `index`); default PREPARED/../index"})
    mine_depth: int = field(default=30, metadata={"help": "mined negatives come from the top this many"})
    mine_skip: int = field(default=3, metadata={"help": "top results never used as mined negatives"})
    lora: LoRA = field(default_factory=LoRA)
    # learning from served traffic instead of judgments
    events: str | None = field(default=None, metadata={
        "help": "train on an event log (the server's SERVE_STATE/events) instead of judgments: clicks are "
                "positives, products skipped above them negatives (docs/events.md); no judgments file is read"})
    clicks: ClickPairs = field(default_factory=ClickPairs)
    # learning from the catalogue alone
    pairs: str = field(default="judged", metadata={
        "help": "judged (the prepared judgments) or synthetic (`firstlight synthesize`'s pseudo-queries: no "
                "judgments file is read; the checkpoint is picked by held-out pseudo-queries)"})
    synthetic_dir: str | None = field(default=None, metadata={
        "help": "with --pairs synthetic: the output of `firstlight synthesize`; default PREPARED/../synthetic"})
    fail_at_step: int = field(default=0, metadata={"cli": False, "help": "tests only: raise once at this step"})

    @property
    def mines(self) -> bool:
        """Some hard negatives are mined near-misses (from the zero-shot index, which must then exist)."""
        # a log's negatives are skipped products; synthetic pairs bring their own
        return self.hard_negatives in MINED_MODES and not self.events and self.pairs == "judged"

    def micro_steps(self) -> tuple[int, int]:
        """(texts per backward pass, backward passes per optimizer step) as DeepSpeed sees them."""
        if self.grad_cache_chunk:  # each chunk's re-forward + backward is one DeepSpeed micro-step
            return self.grad_cache_chunk, self.optim.batch_size // self.grad_cache_chunk
        return self.optim.batch_size, self.optim.grad_accum

    def index_inputs(self) -> dict[str, str | None]:
        """The index folders training reads besides the prepared data, by setting (the driver fetches
        those in buckets): the zero-shot index when negatives are mined."""
        return {"mine_index_dir": self.mine_index_dir} if self.mines else {}

    def validate(self) -> None:
        """Every check: the settings, then the folders they name."""
        self.validate_settings()
        self.validate_paths()

    def validate_settings(self) -> None:
        """The checks that need no file (the demo runs them before its first stage)."""
        validate_shared(self)
        if self.grad_cache_chunk:
            if self.optim.grad_accum != 1:
                raise ConfigError("grad_cache_chunk", "cached gradients replace accumulation",
                                  "use --optim.grad_accum 1 and a larger --optim.batch_size (that is the point "
                                  "of the mode)")
            if self.grad_cache_chunk < 0 or self.optim.batch_size % self.grad_cache_chunk:
                raise ConfigError("grad_cache_chunk", f"{self.grad_cache_chunk} does not divide the batch size "
                                  f"{self.optim.batch_size}", "pick a chunk that divides optim.batch_size, e.g. 32 for 256")
        check_choice("hard_negatives", self.hard_negatives, HARD_NEGATIVE_MODES)
        if self.mines:
            check_range("mine_skip", self.mine_skip, 0, self.mine_depth - 1)
        for name in ("query_max_length", "product_max_length"):
            check_range(name, getattr(self, name), 1)
        check_range("length_window", self.length_window, 0)
        self.lora.validate()
        self.clicks.validate()
        check_choice("pairs", self.pairs, PAIR_SOURCES)
        if self.pairs == "synthetic" and self.events:
            raise ConfigError("pairs", "synthetic pairs and an event log are two sources", "pass one of "
                              "--pairs synthetic and --events (warm-start one run from the other with --model)")

    def validate_paths(self) -> None:
        """The checks of the folders and models the config names (cloud URIs are checked where training
        fetches them, train.driver)."""
        validate_shared_paths(self)
        check_event_log(self.events)
        if self.pairs == "synthetic":
            if not self.synthetic_dir:
                self.synthetic_dir = str(Path(self.prepared_dir).parent / "synthetic")
            if not is_uri(self.synthetic_dir) and not (Path(self.synthetic_dir) / "pairs.parquet").exists():
                raise ConfigError("synthetic_dir", f"{self.synthetic_dir} holds no synthetic pairs",
                                  "run `firstlight synthesize --prepared_dir ...` first, or pass --synthetic_dir")
        if self.mines and not is_uri(self.prepared_dir):
            if not self.mine_index_dir:
                self.mine_index_dir = str(Path(self.prepared_dir).parent / "index")
            if not is_uri(self.mine_index_dir) and not (Path(self.mine_index_dir) / "index.faiss").exists():
                raise ConfigError("mine_index_dir", f"no zero-shot index in {self.mine_index_dir} to mine negatives from",
                                  "run `firstlight embed` and `firstlight index` first (or `firstlight demo`), "
                                  "or pass --mine_index_dir")

    def resolved_output_dir(self) -> Path:
        return Path(self.output_dir) if self.output_dir else Path(self.prepared_dir).parent / "train"


def validate_shared(cfg) -> None:
    """The checks of the components every task's config composes."""
    cfg.optim.validate()
    cfg.dist.validate()
    cfg.checkpoints.validate()
    cfg.data.validate()
    check_together(cfg.optim, cfg.dist, cfg.checkpoints, cfg.data)


def check_event_log(events: str | None) -> None:
    if events and not is_uri(events) and not (Path(events) / "impressions").is_dir():
        raise ConfigError("events", f"{events} holds no event log (no impressions/ folder)",
                          "pass the folder the server logs to (SERVE_STATE/events by default)")


def validate_shared_paths(cfg) -> None:
    """The prepared folder, the starting model and the checkpoint to resume from, of any task."""
    if not cfg.prepared_dir:
        raise ConfigError("prepared_dir", "is not set", "pass --prepared_dir (the output of prepare)")
    if not is_uri(cfg.prepared_dir) and not (Path(cfg.prepared_dir) / "catalogue").is_dir():
        raise ConfigError("prepared_dir", f"{cfg.prepared_dir} holds no prepared catalogue",
                          "run `firstlight prepare` and pass its output folder")
    label_free = getattr(cfg, "events", None) or getattr(cfg, "pairs", "judged") == "synthetic"
    for split in () if label_free else ("train", "val"):  # a log or pseudo-queries replace the judgments
        if not is_uri(cfg.prepared_dir) and not (Path(cfg.prepared_dir) / "judgments" / split).is_dir():
            raise ConfigError("prepared_dir", f"{cfg.prepared_dir} has no {split} split",
                              "run `firstlight prepare` and pass its output folder")
    path = resolve_model_path(cfg.model)
    if is_ensemble(path):
        raise ConfigError("model", f"{cfg.model} is an ensemble of encoders, which does not train further",
                          "fine-tune one of its members (or the encoders it was built from), then rebuild it")
    if Path(cfg.model).expanduser().exists() is False and path == cfg.model and "/" not in cfg.model:
        raise ConfigError("model", f"{cfg.model!r} is neither a folder nor a hub name (owner/name)",
                          "pass an existing model folder or a hub name")
    resume = cfg.checkpoints.resume_from
    if resume and not is_uri(resume) and not (Path(resume) / "trainer_state.json").exists():
        raise ConfigError("checkpoints.resume_from", f"{resume} is not a FirstLight training checkpoint "
                          "(no trainer_state.json)", "pass a checkpoint_* folder from a training run")
