"""Manifests and atomic writes: every artifact folder says what made it, and is never half-written."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

MANIFEST = "manifest.json"


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def describe_inputs(paths) -> list[dict]:
    return [{"path": str(Path(p).resolve()), "bytes": Path(p).stat().st_size, "sha256": file_sha256(Path(p))}
            for p in paths]


def read_manifest(folder: Path) -> dict | None:
    path = Path(folder) / MANIFEST
    if not path.exists():
        return None
    with open(path) as fh:
        return json.load(fh)


def write_json(path: Path, data: dict) -> None:
    """Write JSON through a temporary file and a rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=False, default=str)
        fh.write("\n")
    os.replace(tmp, path)


@contextmanager
def atomic_folder(final: Path):
    """Yield a scratch folder; on success it replaces ``final`` in one rename, on failure it is removed.

    A crash mid-stage therefore leaves the previous complete output (or nothing), never a mix.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch = final.with_name(f".{final.name}.partial{os.getpid()}")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    try:
        yield scratch
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    old = final.with_name(f".{final.name}.old{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(scratch, final)
    shutil.rmtree(old, ignore_errors=True)


def up_to_date(folder: Path, expected: dict) -> bool:
    """True when ``folder`` holds a manifest whose ``inputs_key`` equals ``expected``."""
    manifest = read_manifest(folder)
    # Compare as JSON sees it: tuples in the expected key were stored as lists.
    return manifest is not None and manifest.get("inputs_key") == json.loads(json.dumps(expected, default=str))
