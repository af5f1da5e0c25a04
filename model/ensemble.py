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

    firstlight ensemble --models runs/minilm/model,runs/mpnet/model --weights 0.5,0.5 --output_dir ens

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

from common.config import Listed, listed
from common.errors import ConfigError
from common.manifest import atomic_folder
from model.folders import (
    MANIFEST,
    check_model_folders,
    run_on_local_copies,
    source_of,
    uses_bucket,
)

log = logging.getLogger(__name__)

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


@dataclass
class EnsembleConfig:
    models: Listed = field(default=(), metadata={
        "help": "encoder folders to combine, comma-separated (two or more; any families, any widths)"})
    weights: tuple[float, ...] | str = field(default=(), metadata={
        "help": "each model's weight in the ensemble's score, comma-separated (default: equal); pick them on "
                "the val split (`firstlight evaluate --split val`)"})
    output_dir: str = field(default="", metadata={"help": "where the ensemble folder is written"})

    def __post_init__(self):
        self.models = listed(self.models)
        self.weights = listed(self.weights)

    def validate(self) -> None:
        check_model_folders(self.models, self.output_dir, "an ensemble combines")
        self.normalised_weights()

    def normalised_weights(self) -> list[float]:
        return scaled_weights(self.weights, len(self.models), "weights", "--weights")


def run_ensemble(cfg: EnsembleConfig) -> Path | str:
    """Copy the members into one folder beside their weights; return the folder."""
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
