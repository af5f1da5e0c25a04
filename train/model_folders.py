"""What the stages that combine exported encoders (`firstlight soup`, `firstlight ensemble`) share:
the checks on their model folders, and running them on folders kept in a bucket."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import replace
from pathlib import Path

from firstlight import storage
from firstlight.errors import ConfigError

log = logging.getLogger(__name__)


def check_model_folders(models, output_dir: str, combines: str) -> None:
    """Two or more encoder folders (local, or bucket URIs), each listed once, and a new output folder.

    ``combines`` starts the message for too few models: "a soup averages", "an ensemble combines"."""
    from train.ensemble_encoder import MANIFEST as ENSEMBLE

    if len(models) < 2:
        raise ConfigError("models", f"{len(models)} model folder(s) given; {combines} two or more",
                          "pass --models RUN_A/model,RUN_B/model[,...]")
    seen = set()
    for model in models:
        if not storage.exists(storage.join(model, "config.json")):
            raise ConfigError("models", f"{model} is not an encoder folder (no config.json)"
                              + (": an ensemble cannot be a member" if storage.exists(storage.join(model, ENSEMBLE))
                                 else ""),
                              "pass exported model/ folders (`firstlight train`, `soup` or a "
                              "sentence-transformers folder)")
        if _identity(model) in seen:
            raise ConfigError("models", f"{model} is listed twice, which would weigh it double",
                              "list each model folder once")
        seen.add(_identity(model))
    if not output_dir:
        raise ConfigError("output_dir", "no output folder given", "pass --output-dir FOLDER")
    if _identity(output_dir) in seen:
        raise ConfigError("output_dir", f"{output_dir} is one of the models", "write to a new folder")


def _identity(path: str) -> str:
    return str(path).rstrip("/") if storage.is_uri(path) else str(Path(path).expanduser().resolve())


def source_of(model) -> str:
    """Where a model came from, as the output's manifest records it: the bucket URI of a fetched
    mirror, else the local folder."""
    return storage.uri_of(model) or str(Path(model).expanduser().resolve())


def uses_bucket(cfg) -> bool:
    return any(storage.is_uri(p) for p in (*cfg.models, cfg.output_dir))


def run_on_local_copies(run, cfg, marker: str) -> str:
    """Run a combining stage whose models or output are bucket URIs: the models are fetched to local
    mirrors first (skipped when current), the output is built in a scratch folder and uploaded with
    ``marker`` last, so a reader never takes a half-uploaded model for a whole one."""
    from train.encoder import resolve_model_path

    models = tuple(resolve_model_path(m) if storage.is_uri(m) else m for m in cfg.models)
    if not storage.is_uri(cfg.output_dir):
        return run(replace(cfg, models=models))
    with tempfile.TemporaryDirectory(prefix=".firstlight-build-") as scratch:
        built = run(replace(cfg, models=models, output_dir=str(Path(scratch) / "model")))
        storage.push(Path(built), cfg.output_dir, marker=marker)
    log.info("[storage] %s is in place", cfg.output_dir)
    return cfg.output_dir
