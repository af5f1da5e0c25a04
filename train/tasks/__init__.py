"""Training tasks: what is trained. Each task provides its data, model, step, validator and export
through one small interface, so the driver, the loop, the engine and the checkpoints run any task
without naming one. A config names its task (``TrainConfig.task``); a checkpoint records it.

Adding a task (a late-interaction model, say) is one module here with a class like those below, and
its line in ``TASKS``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Protocol

from train.tasks.bi_encoder import BiEncoderTask
from train.tasks.reranker import RerankerTask


class Task(Protocol):
    name: str
    config_class: type
    model_loader: str  # the transformers Auto class that rebuilds the model from its saved config

    def data(self, cfg, model_path: str) -> tuple[Any, int, dict]:
        """(tokenised training examples as a Ray Dataset, their count, extra settings for the loop)."""

    def model(self, cfg, model_path: str, attention: str | None):
        """The model to train, in training mode."""

    def stepper(self, cfg) -> Callable:
        """``stepper(engine, batch) -> (loss, logged, whether the optimizer stepped)``."""

    def validator(self, cfg, tokenizer, model_path: str, extra: dict) -> Callable | None:
        """``validator(engine) -> val nDCG@10``, or None when validation is off."""

    def batches(self, cfg, batches, rng):
        """The worker's micro-batches as the task wants them ordered (the bi-encoder groups by length)."""

    def load_weights(self, cfg, model, weights: dict) -> tuple[Any, list, list]:
        """``(model, missing keys, unexpected keys)``: a checkpoint's weights loaded into a fresh model."""

    def examples_in(self, batch: dict) -> int:
        """Training examples (pairs) in a micro-batch, for throughput."""

    def export(self, cfg, model, tokenizer, out: Path, state: dict) -> Path:
        """Write the trained model as a folder the other stages load."""


TASKS: dict[str, Task] = {task.name: task for task in (BiEncoderTask(), RerankerTask())}


def task_of(cfg) -> Task:
    return TASKS[cfg.task]


def config_class(name: str) -> type:
    """The config class of a task by its recorded name (checkpoints written before tasks had names
    were the bi-encoder's)."""
    return TASKS[name or BiEncoderTask.name].config_class
