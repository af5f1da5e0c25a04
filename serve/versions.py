"""Which model + index pair answers: the *active version*, kept in STATE/active.json.

A version is a (model, index) pair, with the reranker it ranks with when that is not the server's
configured one (a canary's, serve/canary.py); its id is a short hash of them, so vectors from one
model are never searched in another model's index. Every request reads the active version once, at its start,
and carries it to the Encoder and the Retriever: a reload that lands mid-request does not mix models,
and requests in flight finish on the version they started with. The file is replaced atomically
(write + rename), and every gateway replica sees a reload at its next request.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class Version:
    model: str
    index_dir: str
    reranker: str | None = None  # None: the server's configured reranker (rerank.model)

    @property
    def id(self) -> str:
        own = f"\n{self.reranker}" if self.reranker else ""  # ids of versions without one stay as they were
        return hashlib.sha256(f"{self.model}\n{self.index_dir}{own}".encode()).hexdigest()[:12]

    def describe(self) -> dict:
        return {"id": self.id, "model": self.model, "index": self.index_dir,
                **({"reranker": self.reranker} if self.reranker else {})}

    def public(self) -> dict:
        """What anyone may see: the id and the last two parts of each path (no server layout)."""
        return {"id": self.id, "model": _short(self.model), "index": _short(self.index_dir),
                **({"reranker": _short(self.reranker)} if self.reranker else {})}

    def fields(self) -> dict:
        """As saved in a state file (no reranker key when it has none, as before rerankers per version)."""
        return {"model": self.model, "index_dir": self.index_dir, **({"reranker": self.reranker} if self.reranker else {})}

    @classmethod
    def saved(cls, data: dict) -> "Version":
        return cls(data["model"], data["index_dir"], data.get("reranker"))


def _short(path: str) -> str:
    return "/".join(path.rstrip("/").split("/")[-2:])


class ActiveVersion:
    """The active version survives restarts (a reload is not undone by a replica restarting), until
    the configured model or index changes: then the configuration wins. A saved version that can no
    longer be served (its index folder is gone, or the file is damaged) is dropped at start, with a
    warning, and the configured one serves: no saved state can keep the service from starting."""

    def __init__(self, state_dir: str, default: Version, usable=None):
        """``usable(version) -> None or the reason it cannot serve``: checked on the saved version at start."""
        self.path = Path(state_dir) / "active.json"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.configured = default.fields()
        self.dropped: str | None = None  # what was dropped at start, and why (shown in /v1/stats)
        saved = self._saved()
        if saved is None or saved.get("configured") != self.configured:
            self.set(default)
        else:
            version = Version.saved(saved)
            reason = usable(version) if usable and version != default else None
            if reason:
                self.dropped = f"the reloaded version {version.id} could not be served; see the log"
                log.warning("firstlight: dropped the reloaded version %s (%s); serving the configured one",
                            version.describe(), reason)
                self.set(default)
        self._seen: tuple[tuple, Version] | None = None

    def _saved(self) -> dict | None:
        if not self.path.exists():
            return None
        try:
            data = json.loads(self.path.read_text())
            Version.saved(data)
            return data
        except (ValueError, KeyError, TypeError) as err:
            log.warning("firstlight: %s is damaged (%s); serving the configured version", self.path, err)
            return None

    def get(self) -> Version:
        st = self.path.stat()
        stamp = (st.st_mtime_ns, st.st_ino)  # a replace gives a new inode even within one clock tick
        if self._seen is None or self._seen[0] != stamp:
            data = json.loads(self.path.read_text())
            self._seen = (stamp, Version.saved(data))
        return self._seen[1]

    def set(self, version: Version) -> None:
        replace_durably(self.path, {**version.fields(), "configured": self.configured})


def replace_durably(path: Path, data) -> None:
    """``path`` holds ``data`` as JSON, or its old content: written beside it, fsync'ed, renamed over it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


# the active version, a canary beside it, and the version before a reload (requests still in flight)
KEEP_VERSIONS = 3


class VersionCache(OrderedDict):
    """Least-recently-used cache of loaded versions."""

    def get_or_load(self, key, load):
        if key not in self:
            self[key] = load()
            while len(self) > KEEP_VERSIONS:
                self.popitem(last=False)
        self.move_to_end(key)
        return self[key]


def rows_by(keys) -> dict:
    """Row indices of a batch grouped by key (model or version), in first-seen order."""
    groups: dict = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return groups
