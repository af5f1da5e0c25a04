"""The reranker's training config. It composes the same components as the bi-encoder's
(train/settings.py: engine, DeepSpeed, precision, accumulation, checkpoints, resume, workers: the
same settings, checks and meaning), with its own defaults, and adds what a cross-encoder needs:
candidate lists mined from the first stage, their size, the loss.

A micro-batch is ``optim.batch_size`` queries x ``group_size`` (query, product) pairs. Each query's
group holds its judged products (graded by their relevance) and ``mined_per_group`` unjudged products
from the first stage's ranks ``mine_skip``..``mine_depth`` as irrelevant ones, so the reranker learns
on lists like those it reorders when serving.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from common.config import check_choice, check_range
from common.errors import ConfigError
from common.storage import is_uri
from model.folders import DEFAULT_MODEL
from ranking.hybrid import FirstStage
from train.config import check_event_log, validate_shared, validate_shared_paths
from train.event_pairs import ClickPairs
from train.settings import (
    Checkpointing,
    Distribution,
    Optimisation,
    TrainData,
    flat_names,
)

RERANK_LOSSES = ("listnet", "bce")


def _reranker_optim() -> Optimisation:
    # the measured recipe: 250 steps of 16 queries (half an epoch of Home Depot's 8,033 training
    # queries, 12 minutes on 2 cores); its validation nDCG@10 was still rising, so longer runs are
    # worth measuring. A higher lr than the encoder's: the scoring head starts from scratch.
    return Optimisation(batch_size=16, max_steps=250, lr=1e-4)


@dataclass
class RerankerConfig:
    task: ClassVar[str] = "reranker"
    RENAMED: ClassVar[dict] = flat_names({"optim": Optimisation, "dist": Distribution,
                                          "checkpoints": Checkpointing, "data": TrainData}) | {
        "spell_correct": "first_stage.spell_correct"}

    prepared_dir: str | None = field(default=None, metadata={"help": "output of `prepare` (train/val splits)"})
    output_dir: str | None = field(default=None, metadata={"help": "default: PREPARED/../reranker"})
    model: str = field(default=DEFAULT_MODEL, metadata={
        "help": "model to start from (an encoder folder or hub name; a scoring head is added)"})
    optim: Optimisation = field(default_factory=_reranker_optim)
    dist: Distribution = field(default_factory=Distribution)
    checkpoints: Checkpointing = field(default_factory=lambda: Checkpointing(every=125))
    data: TrainData = field(default_factory=TrainData)
    loss: str = field(default="listnet", metadata={
        "help": "listnet (listwise: softmax over each query's group, as sentence-transformers' ListNetLoss) "
                "or bce (pointwise: binary cross-entropy on the relevance scaled to 0..1)"})
    group_size: int = field(default=8, metadata={"help": "(query, product) pairs per query in a batch"})
    mined_per_group: int = field(default=3, metadata={"help": "mined irrelevant products per group (the rest are judged)"})
    pair_max_length: int = field(default=96, metadata={"help": "tokens kept per (query, product text) pair"})
    mine_depth: int = field(default=50, metadata={"help": "mined irrelevant products come from the first stage's top this many"})
    mine_skip: int = field(default=10, metadata={
        "help": "first-stage ranks never used as mined irrelevant products (the top is often relevant but unjudged)"})
    rerank_depth: int = field(default=30, metadata={"help": "validation: first-stage candidates reranked per query"})
    first_stage_index_dir: str | None = field(default=None, metadata={
        "help": "the FAISS index the server's first stage searches (candidates are mined from it); "
                "default PREPARED/../index"})
    first_stage: FirstStage = field(default_factory=FirstStage)
    events: str | None = field(default=None, metadata={
        "help": "judge from an event log's clicks (docs/events.md) instead of the judgments; no judgments file is read"})
    clicks: ClickPairs = field(default_factory=ClickPairs)
    fail_at_step: int = field(default=0, metadata={"cli": False, "help": "tests only: raise once at this step"})

    def micro_steps(self) -> tuple[int, int]:
        """(query groups per backward pass, backward passes per optimizer step) as DeepSpeed sees them."""
        return self.optim.batch_size, self.optim.grad_accum

    def index_inputs(self) -> dict[str, str | None]:
        """The index folders training reads besides the prepared data: the first stage's."""
        return {"first_stage_index_dir": self.first_stage_index_dir}

    def validate(self) -> None:
        self.validate_settings()
        self.validate_paths()

    def validate_settings(self) -> None:
        validate_shared(self)
        self.first_stage.validate("first_stage.")
        check_choice("loss", self.loss, RERANK_LOSSES)
        check_range("group_size", self.group_size, 2)
        check_range("mined_per_group", self.mined_per_group, 0, self.group_size - 1)
        check_range("pair_max_length", self.pair_max_length, 8)
        check_range("rerank_depth", self.rerank_depth, 1)
        check_range("mine_skip", self.mine_skip, 0, self.mine_depth - 1)
        self.clicks.validate()

    def validate_paths(self) -> None:
        validate_shared_paths(self)
        check_event_log(self.events)
        if not self.first_stage_index_dir and not is_uri(self.prepared_dir):
            self.first_stage_index_dir = str(Path(self.prepared_dir).parent / "index")
        if self.first_stage_index_dir and not is_uri(self.first_stage_index_dir) and \
                not (Path(self.first_stage_index_dir) / "index.faiss").exists():
            raise ConfigError("first_stage_index_dir", f"no FAISS index in {self.first_stage_index_dir}",
                              "run `firstlight embed` and `firstlight index` (or `firstlight demo`) first, "
                              "or pass --first_stage_index_dir")

    def resolved_output_dir(self) -> Path:
        return Path(self.output_dir) if self.output_dir else Path(self.prepared_dir).parent / "reranker"
