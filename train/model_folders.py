"""Checks shared by the stages that combine exported encoders (`firstlight soup`, `firstlight ensemble`)."""

from __future__ import annotations

from pathlib import Path

from firstlight.errors import ConfigError
from firstlight.storage import is_uri


def check_model_folders(models, output_dir: str, combines: str) -> None:
    """Two or more local encoder folders, each listed once, and a new local output folder.

    ``combines`` starts the message for too few models: "a soup averages", "an ensemble combines"."""
    from train.ensemble_encoder import is_ensemble

    if len(models) < 2:
        raise ConfigError("models", f"{len(models)} model folder(s) given; {combines} two or more",
                          "pass --models RUN_A/model,RUN_B/model[,...]")
    for name, path in [("models", m) for m in models] + [("output_dir", output_dir)]:
        if path and is_uri(path):
            raise ConfigError(name, f"{path} is a bucket URI; this stage reads and writes local or shared folders",
                              "copy the model folders to a shared filesystem (or pull them) first")
    seen = set()
    for model in models:
        folder = Path(model).expanduser()
        if not (folder / "config.json").is_file():
            raise ConfigError("models", f"{model} is not an encoder folder (no config.json)"
                              + (": an ensemble cannot be a member" if is_ensemble(folder) else ""),
                              "pass exported model/ folders (`firstlight train`, `soup` or a "
                              "sentence-transformers folder)")
        if folder.resolve() in seen:
            raise ConfigError("models", f"{model} is listed twice, which would weigh it double",
                              "list each model folder once")
        seen.add(folder.resolve())
    if not output_dir:
        raise ConfigError("output_dir", "no output folder given", "pass --output-dir FOLDER")
    if Path(output_dir).expanduser().resolve() in seen:
        raise ConfigError("output_dir", f"{output_dir} is one of the models", "write to a new folder")
