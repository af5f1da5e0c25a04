"""Ensemble encoder: several fine-tuned encoders served as one, through one index.

Encoders of different families fine-tuned on the same pairs (MiniLM and MPNet, say) make different
mistakes on unseen queries, and the weighted mean of their cosine similarities ranks better than
either: on Home Depot's unseen test queries the fine-tuned MiniLM and MPNet rank 0.390 / 0.817 and
0.391 / 0.811 nDCG@10 / Recall@100 alone, 0.410 / 0.840 together (benchmarks/RESULTS.md).

The ensemble's vector of a text is each member's unit vector times the square root of its weight,
concatenated. With weights summing to one the result is a unit vector, and the inner product of two
such vectors is the weighted mean of the members' cosines: the ensemble's score is exactly what one
FAISS inner-product index over those vectors returns. So embed, index, evaluate and serve take an
ensemble folder as their ``--model`` like any encoder; it costs the sum of its members' time.

    firstlight ensemble --models runs/minilm/model,runs/mpnet/model --weights 0.5,0.5 --output-dir ens

The folder holds a copy of every member (``member-0``, ``member-1``, ...) and
``firstlight_ensemble.json``; it is self-contained, so it can be copied to a cluster as one folder.
An ensemble cannot be fine-tuned further (train a member, then rebuild it), nor souped.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from firstlight.errors import ConfigError
from train.model_folders import check_model_folders, run_on_local_copies, source_of, uses_bucket

log = logging.getLogger(__name__)

MANIFEST = "firstlight_ensemble.json"


def is_ensemble(path) -> bool:
    return (Path(path).expanduser() / MANIFEST).is_file()


def members(folder) -> list[tuple[Path, float]]:
    """An ensemble folder's (member folder, weight) pairs, from its manifest; a clear error if broken."""
    folder = Path(folder).expanduser()
    try:
        spec = json.loads((folder / MANIFEST).read_text())["members"]
        found = [(folder / m["folder"], float(m["weight"])) for m in spec]
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError("model", f"{folder / MANIFEST} is not a FirstLight ensemble manifest ({err})",
                          "rebuild the folder with `firstlight ensemble`") from None
    missing = [str(p) for p, _ in found if not (p / "config.json").is_file()]
    if missing or not found:
        raise ConfigError("model", f"the ensemble {folder} lacks its member folder(s) {missing}",
                          "copy the whole ensemble folder, or rebuild it with `firstlight ensemble`")
    return found


def tokenizer_folders(path) -> list[Path]:
    """The folders whose tokenizers cut a model's texts: the model's own, or each member's."""
    folder = Path(path).expanduser()
    return [p for p, _ in members(folder)] if is_ensemble(folder) else [folder]


def scaled_weights(values, count: int, field: str, flag: str) -> list[float]:
    """One non-negative weight per member (numbers, or their command-line strings), scaled to sum
    to 1; equal weights when none are given."""
    if not values:
        return [1.0 / count] * count
    given = ",".join(map(str, values))
    try:
        numbers = [float(v) for v in values]
    except ValueError:
        raise ConfigError(field, f"{given} is not a list of numbers", f"e.g. {flag} 0.5,0.5") from None
    if len(numbers) != count or min(numbers) < 0 or sum(numbers) <= 0:
        raise ConfigError(field, f"{given} is not one non-negative weight per model ({count})",
                          f"one weight per model, e.g. {flag} 0.5,0.5 (they are scaled to sum to 1)")
    return [w / sum(numbers) for w in numbers]


def join_weighted(parts: list[np.ndarray], weights: list[float]) -> np.ndarray:
    """Each member's unit vectors times sqrt(its weight), side by side: inner products of the result
    are the weighted mean of the members' cosines."""
    return np.ascontiguousarray(np.hstack([v * np.float32(np.sqrt(w)) for v, w in zip(parts, weights)]),
                                dtype=np.float32)


@dataclass
class EnsembleConfig:
    models: tuple[str, ...] = field(default=(), metadata={
        "help": "encoder folders to combine, comma-separated (two or more; any families, any widths)"})
    weights: tuple[float, ...] = field(default=(), metadata={
        "help": "each model's weight in the ensemble's score, comma-separated (default: equal); pick them on "
                "the val split (`firstlight evaluate --split val`)"})
    output_dir: str = field(default="", metadata={"help": "where the ensemble folder is written"})

    def validate(self) -> None:
        check_model_folders(self.models, self.output_dir, "an ensemble combines")
        self.normalised_weights()

    def normalised_weights(self) -> list[float]:
        return scaled_weights(self.weights, len(self.models), "weights", "--weights")


def run_ensemble(cfg: EnsembleConfig) -> Path | str:
    """Copy the members into one folder beside their weights; return the folder."""
    from data_pipeline.manifest import atomic_folder

    cfg.validate()
    if uses_bucket(cfg):  # members copied from, or the ensemble uploaded to, a bucket
        return run_on_local_copies(run_ensemble, cfg, marker=MANIFEST)
    out = Path(cfg.output_dir).expanduser()
    members = []
    with atomic_folder(out) as scratch:  # an interrupted build leaves no half-copied ensemble behind
        for i, (model, weight) in enumerate(zip(cfg.models, cfg.normalised_weights())):
            name = f"member-{i}"
            log.info("[ensemble] %d/%d: %s (weight %.3f)", i + 1, len(cfg.models), model, weight)
            shutil.copytree(Path(model).expanduser(), scratch / name)
            dim = json.loads((scratch / name / "config.json").read_text()).get("hidden_size")
            members.append({"folder": name, "weight": weight, "source": source_of(model),
                            "dim": dim})
        (scratch / MANIFEST).write_text(json.dumps({"members": members}, indent=2) + "\n")
    log.info("[ensemble] %d encoders in %s (%d dimensions)", len(members), out,
             sum(m["dim"] or 0 for m in members))
    return out


class EnsembleEncoder:
    """The members' weighted unit vectors, concatenated: ``TextEncoder``'s interface for embed,
    evaluate and serve."""

    def __init__(self, members: list, weights: list[float], name: str = ""):
        self.members, self.weights, self.name = members, weights, name
        self.max_length = max(m.max_length for m in members)

    @classmethod
    def load(cls, folder, **kwargs) -> "EnsembleEncoder":
        """``kwargs`` (max_length, device, dtype) go to every member's ``TextEncoder.load``."""
        from train.encoder import TextEncoder

        found = members(folder)
        return cls([TextEncoder.load(str(p), **kwargs) for p, _ in found], [w for _, w in found], name=str(folder))

    @property
    def dim(self) -> int:
        return sum(m.dim for m in self.members)

    def encode(self, texts, batch_size: int = 64, progress: str | None = None) -> np.ndarray:
        return join_weighted([m.encode(texts, batch_size=batch_size,
                                       progress=progress and f"{progress} (member {i + 1}/{len(self.members)})")
                              for i, m in enumerate(self.members)], self.weights)
