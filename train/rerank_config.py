"""The reranker's training config: the bi-encoder's TrainConfig (engine, DeepSpeed, precision,
accumulation, checkpoints, resume, workers: the same fields, checks and meaning) with what a
cross-encoder needs on top: candidate lists mined from the first stage, their size, the loss.

A micro-batch is ``batch_size`` queries x ``group_size`` (query, product) pairs. Each query's group
holds its judged products (graded by their relevance) and ``mined_per_group`` unjudged products from
the first stage's ranks ``mine_skip``..``mine_depth`` as irrelevant ones, so the reranker learns on
lists like those it reorders when serving.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from common.config import check_choice, check_range
from common.errors import ConfigError
from common.storage import is_uri
from ranking.hybrid import FirstStage
from train.config import TrainConfig

RERANK_LOSSES = ("listnet", "bce")


@dataclass
class RerankerConfig(TrainConfig):
    task: ClassVar[str] = "reranker"

    batch_size: int = field(default=16, metadata={"help": "queries per worker per micro-batch (x group_size pairs)"})
    # the measured recipe: 250 steps (half an epoch of Home Depot's 8,033 training queries, 12 minutes
    # on 2 cores); its validation nDCG@10 was still rising, so longer runs are worth measuring
    max_steps: int = field(default=250, metadata={"help": "stop after this many optimizer steps (0 = all epochs)"})
    lr: float = field(default=1e-4, metadata={"help": "peak learning rate (AdamW; the scoring head starts from scratch)"})
    checkpoint_every: int = field(default=125, metadata={
        "help": "optimizer steps between checkpoints, each validated (0 = each epoch)"})
    hard_negatives: str = field(default="none", metadata={"cli": False, "help": "bi-encoder only"})
    length_window: int = field(default=0, metadata={"cli": False, "help": "bi-encoder only"})
    mine_depth: int = field(default=50, metadata={"help": "mined irrelevant products come from the first stage's top this many"})
    mine_skip: int = field(default=10, metadata={
        "help": "first-stage ranks never used as mined irrelevant products (the top is often relevant but unjudged)"})
    # the reranker's own settings
    loss: str = field(default="listnet", metadata={
        "help": "listnet (listwise: softmax over each query's group, as sentence-transformers' ListNetLoss) "
                "or bce (pointwise: binary cross-entropy on the relevance scaled to 0..1)"})
    group_size: int = field(default=8, metadata={"help": "(query, product) pairs per query in a batch"})
    mined_per_group: int = field(default=3, metadata={"help": "mined irrelevant products per group (the rest are judged)"})
    pair_max_length: int = field(default=96, metadata={"help": "tokens kept per (query, product text) pair"})
    rerank_depth: int = field(default=30, metadata={"help": "validation: first-stage candidates reranked per query"})
    first_stage_index_dir: str | None = field(default=None, metadata={
        "help": "the FAISS index the server's first stage searches (candidates are mined from it); "
                "default PREPARED/../index"})
    first_stage: FirstStage = field(default_factory=FirstStage)
    spell_correct: bool = field(default=True, metadata={"help": "correct query spelling before mining, as the server does"})

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.first_stage, dict):  # from a YAML file or a worker's copy of the config
            self.first_stage = FirstStage(**self.first_stage)

    def validate_settings(self) -> None:
        super().validate_settings()
        self.first_stage.validate("first_stage.")
        check_choice("loss", self.loss, RERANK_LOSSES)
        check_range("group_size", self.group_size, 2)
        check_range("mined_per_group", self.mined_per_group, 0, self.group_size - 1)
        check_range("pair_max_length", self.pair_max_length, 8)
        check_range("rerank_depth", self.rerank_depth, 1)
        check_range("mine_skip", self.mine_skip, 0, self.mine_depth - 1)
        if self.grad_cache_chunk:
            raise ConfigError("grad_cache_chunk", "cached gradients are for the bi-encoder's in-batch negatives",
                              "leave it at 0; use --grad-accum for larger reranker batches")
        if self.lora_rank:
            raise ConfigError("lora_rank", "LoRA is not offered for the reranker (its scoring head must train)",
                              "leave it at 0")

    def validate_paths(self) -> None:
        super().validate_paths()
        if not self.first_stage_index_dir and not is_uri(self.prepared_dir):
            self.first_stage_index_dir = str(Path(self.prepared_dir).parent / "index")
        if self.first_stage_index_dir and not is_uri(self.first_stage_index_dir) and \
                not (Path(self.first_stage_index_dir) / "index.faiss").exists():
            raise ConfigError("first_stage_index_dir", f"no FAISS index in {self.first_stage_index_dir}",
                              "run `firstlight embed` and `firstlight index` (or `firstlight demo`) first, "
                              "or pass --first-stage-index-dir")

    def resolved_output_dir(self) -> Path:
        return Path(self.output_dir) if self.output_dir else Path(self.prepared_dir).parent / "reranker"
