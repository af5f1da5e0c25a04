"""Where FirstLight looks for data and writes artifacts, with environment overrides."""

import os
from pathlib import Path

from common.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent

#: Environment variable that overrides the Home Depot data folder.
HOMEDEPOT_ENV = "FIRSTLIGHT_HOMEDEPOT_DIR"
#: Environment variable that overrides where artifacts (splits, embeddings, indexes, results) go.
WORKDIR_ENV = "FIRSTLIGHT_WORKDIR"


def default_homedepot_dir() -> Path:
    """The Home Depot folder: $FIRSTLIGHT_HOMEDEPOT_DIR, else ../shared/data/homedepot beside the repo."""
    env = os.environ.get(HOMEDEPOT_ENV)
    if env:
        return Path(env).expanduser()
    return REPO_ROOT.parent / "shared" / "data" / "homedepot"


def default_workdir() -> Path:
    """The artifacts root: $FIRSTLIGHT_WORKDIR, else ./artifacts in the repo."""
    env = os.environ.get(WORKDIR_ENV)
    if env and "://" in env:
        raise ConfigError(WORKDIR_ENV, f"{env} is a URI; this variable names a local folder",
                          f"pass --workdir {env} to the job instead (cloud storage roots are given per run)")
    return Path(env).expanduser() if env else REPO_ROOT / "artifacts"
