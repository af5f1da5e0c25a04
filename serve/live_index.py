"""A product index that takes new, changed and deleted products while it serves.

The saved FAISS index and the BM25 index stay as built; changes live beside them, on both sides at
once (ranking.hybrid.HybridIndex):
- an *overlay* of added or changed products (id, title, text, vector), searched exactly, and their
  tokens, scored by BM25 with the saved catalogue's statistics;
- a *mask* of saved rows that were deleted or replaced by a newer version.

Every change is first appended (and fsync'ed) to a change log, ``STATE/changes/<version>.jsonl``;
the in-memory state is only ever built by replaying that log. So a change that was acknowledged
survives a restart, and every Retriever replica that reads the same log (shared storage) converges
on the same catalogue: before each search a replica replays whatever was appended since its last look.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from pathlib import Path

import numpy as np

from common.spelling import QuerySpeller
from common.storage import local_folder
from data_pipeline.index import ProductIndex
from data_pipeline.prepare import catalogue_schema, load_catalogue
from ranking.filters import AttributeTable
from ranking.hybrid import FirstStage, HybridIndex

log = logging.getLogger("ray.serve")


class LiveIndex:
    """A ``HybridIndex`` (FAISS + BM25, ranking.hybrid) kept in step with the change log."""

    def __init__(self, index_dir: str, prepared_dir: str, change_log: Path, use_gpu: str = "auto",
                 lexical: bool = True):
        # cloud folders are fetched to this node's mirror first (see firstlight.storage)
        self.base = ProductIndex.load(local_folder(index_dir), use_gpu=use_gpu)
        prepared = local_folder(prepared_dir)
        catalogue = load_catalogue(prepared)
        self.hybrid = HybridIndex(self.base, catalogue["product_id"].tolist(), catalogue["title"].tolist(),
                                  catalogue["text"].tolist(), lexical=lexical,
                                  attributes=AttributeTable(catalogue_schema(prepared), catalogue))
        self.change_log = Path(change_log)
        self.change_log.parent.mkdir(parents=True, exist_ok=True)
        self._tail = ChangeLogTail(self.change_log)
        self._lock = threading.Lock()
        self.refresh()

    @property
    def dim(self) -> int:
        return self.base.dim

    @property
    def overlay(self) -> dict:
        return self.hybrid.overlay

    def __len__(self) -> int:
        return len(self.hybrid)

    # -- changes ---------------------------------------------------------------------------
    def upsert(self, items: list[dict]) -> None:
        """items: {id, title, text, vector, attributes}; a known id is replaced. An item without
        ``attributes`` (None or absent) keeps the ones its product has: the log records them whole."""
        self.refresh()
        for item in items:
            if len(item["vector"]) != self.dim:
                raise ValueError(f"vector of {len(item['vector'])} dims for an index of {self.dim}")
        self._append([{"op": "upsert", **item, "vector": [float(x) for x in item["vector"]],
                       "attributes": item.get("attributes") if item.get("attributes") is not None
                       else self.hybrid.attributes_of(item["id"]) if self.contains(item["id"]) else {}}
                      for item in items])

    def delete(self, product_id: str) -> bool:
        """Delete a product; False when it is not in the index."""
        self.refresh()
        if not self.contains(product_id):
            return False
        self._append([{"op": "delete", "id": product_id}])
        return True

    def contains(self, product_id: str) -> bool:
        return self.hybrid.contains(product_id)

    def _append(self, records: list[dict]) -> None:
        """Append whole records and fsync them, or append nothing and raise StorageFull."""
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
        with self._lock, open(self.change_log, "ab", buffering=0) as fh:  # unbuffered: a failed write leaves
            # nothing behind in a buffer to be flushed later, after the rollback
            fcntl.flock(fh, fcntl.LOCK_EX)  # replicas sharing the log append one at a time
            try:
                start = _drop_torn_tail(fh, self.change_log)
                try:
                    view = memoryview(data)
                    while view:
                        view = view[fh.write(view):]
                    os.fsync(fh.fileno())
                except OSError as err:  # a full disk, a quota, a file-size limit: undo the partial record
                    fh.truncate(start)
                    os.fsync(fh.fileno())
                    raise StorageFull(f"the change log {self.change_log} could not be written "
                                      f"({os.strerror(err.errno) if err.errno else err}); nothing was changed") \
                        from None
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        self.refresh()

    def refresh(self) -> None:
        """Apply whatever the change log gained since the last look (other replicas write it too)."""
        with self._lock:
            for line, record in self._tail.read():
                try:
                    if record["op"] == "upsert":
                        vector = np.asarray(record["vector"], dtype=np.float32)
                        if vector.shape != (self.dim,):
                            raise ValueError(f"a vector of shape {vector.shape} for a {self.dim}-dim index")
                        attributes = record.get("attributes") or {}
                        if not isinstance(attributes, dict):
                            raise ValueError("attributes is not an object")
                        self.hybrid.upsert(str(record["id"]), str(record.get("title", "")),
                                           str(record.get("text", "")), vector, attributes)
                    elif record["op"] == "delete":
                        self.hybrid.delete(str(record["id"]))
                    else:
                        raise ValueError(f"unknown op {record['op']!r}")
                except (KeyError, TypeError, ValueError) as err:
                    log.warning("firstlight: %s line %d skipped: %s", self.change_log, line, err)

    def added_items(self) -> list[dict]:
        """Products added or changed through the API (to carry over when the model changes)."""
        self.refresh()
        return [{"id": pid, "title": self.hybrid.titles.get(pid, ""), "text": self.hybrid.texts.get(pid, ""),
                 "attributes": self.hybrid.live_attributes.get(pid, {})} for pid in self.hybrid.overlay]

    def deleted_ids(self) -> list[str]:
        self.refresh()
        return sorted(p for p in self.hybrid.masked if p not in self.hybrid.overlay)

    # -- search ----------------------------------------------------------------------------
    def search(self, vectors: np.ndarray, texts: list[str], k: int, stage: FirstStage,
               exclude: list[set] | None = None, clicked: list[list[str]] | None = None,
               session_weight: float = 0.0, filters: list | None = None) -> list[list[dict]]:
        """Per query, the first stage's top-k over the saved and the live products (ranking.hybrid),
        moved toward the session's clicked products when there are any, within its filter if any."""
        self.refresh()
        return self.hybrid.search(vectors, texts, k, stage, exclude, clicked, session_weight, filters)


class IndexUnavailable(RuntimeError):
    """A version's index cannot be loaded (its folder vanished or is damaged): the service answers 503."""


class StorageFull(OSError):
    """The change log could not take a record (disk full, quota, size limit); nothing was written."""


def _drop_torn_tail(fh, path: Path) -> int:
    """Cut a last line that lacks its newline (a writer died mid-append: it was never acknowledged,
    since acknowledging waits for the fsync) so that no record is ever joined onto it. Called with
    the log locked, so no live writer is mid-line. Returns the size to append at."""
    size = os.fstat(fh.fileno()).st_size
    if size == 0:
        return 0
    with open(path, "rb") as reader:
        reader.seek(max(0, size - 65536))
        tail = reader.read()
    if tail.endswith(b"\n"):
        return size
    cut = tail.rfind(b"\n")
    if cut < 0 and size > len(tail):  # a torn record longer than 64 KiB: find its line's start
        with open(path, "rb") as reader:
            keep = reader.read().rfind(b"\n") + 1
    else:
        keep = size - len(tail) + cut + 1
    log.warning("firstlight: %s ended in a torn record (%d bytes, never acknowledged): removed", path, size - keep)
    fh.truncate(keep)
    os.fsync(fh.fileno())
    return keep


class ChangeLogTail:
    """The complete records appended to a change log since the last read (other replicas append too),
    as (line number, record). A line that is not a JSON object is skipped with a warning naming the
    file and line: a damaged record must not stop the service or hide the records after it."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._offset = 0
        self._line = 0

    def read(self) -> list[tuple[int, dict]]:
        if not self.path.exists() or self.path.stat().st_size == self._offset:
            return []
        with open(self.path, "rb") as fh:
            fh.seek(self._offset)
            data = fh.read()
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next read
        self._offset += end
        records = []
        for raw in data[:end].split(b"\n")[:-1]:
            self._line += 1
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
                if not isinstance(record, dict):
                    raise ValueError(f"a JSON {type(record).__name__}, not an object")
            except (ValueError, RecursionError) as err:
                log.warning("firstlight: %s line %d is damaged and was skipped (%s)", self.path, self._line,
                            str(err)[:200])
                continue
            records.append((self._line, record))
        return records


class LiveSpeller:
    """Query spelling correction that knows the catalogue's words and those of every product added
    through the API since (read from the same change log as the index), so a new product's brand is
    never "corrected" into an older word."""

    def __init__(self, prepared_dir: str, change_log: Path):
        catalogue = load_catalogue(local_folder(prepared_dir))
        self.speller = QuerySpeller(catalogue["text"])
        self._tail = ChangeLogTail(change_log)
        self._lock = threading.Lock()

    def correct(self, texts: list[str]) -> list[str]:
        with self._lock:
            for _, record in self._tail.read():
                if record.get("op") == "upsert":
                    self.speller.add_texts([str(record.get("title", "")), str(record.get("text", ""))])
        return [self.speller.correct(t) for t in texts]


def change_log_path(state_dir: str, version_id: str) -> Path:
    return Path(state_dir) / "changes" / f"{version_id}.jsonl"
