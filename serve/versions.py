"""Which model + index pair answers: the *active version*, kept in STATE/active.json.

A version is a (model, index) pair; its id is a short hash of the two, so vectors from one model are
never searched in another model's index. Every request reads the active version once, at its start,
and carries it to the Encoder and the Retriever: a reload that lands mid-request does not mix models,
and requests in flight finish on the version they started with. The file is replaced atomically
(write + rename), and every gateway replica sees a reload at its next request.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Version:
    model: str
    index_dir: str

    @property
    def id(self) -> str:
        return hashlib.sha256(f"{self.model}\n{self.index_dir}".encode()).hexdigest()[:12]

    def describe(self) -> dict:
        return {"id": self.id, "model": self.model, "index": self.index_dir}


class ActiveVersion:
    """The active version survives restarts (a reload is not undone by a replica restarting), until
    the configured model or index changes: then the configuration wins."""

    def __init__(self, state_dir: str, default: Version):
        self.path = Path(state_dir) / "active.json"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.configured = asdict(default)
        if not self.path.exists() or json.loads(self.path.read_text()).get("configured") != self.configured:
            self.set(default)
        self._seen: tuple[tuple, Version] | None = None

    def get(self) -> Version:
        st = self.path.stat()
        stamp = (st.st_mtime_ns, st.st_ino)  # a replace gives a new inode even within one clock tick
        if self._seen is None or self._seen[0] != stamp:
            data = json.loads(self.path.read_text())
            self._seen = (stamp, Version(data["model"], data["index_dir"]))
        return self._seen[1]

    def set(self, version: Version) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".active-")
        with os.fdopen(fd, "w") as fh:
            json.dump({**asdict(version), "configured": self.configured}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)


KEEP_VERSIONS = 2  # a reload keeps the version before it loaded, for requests still in flight


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
