"""Copying the event log to a bucket (``events.upload_to``), so that training on a cluster reads the
shop's traffic from object storage (``firstlight train --events s3://bucket/events``).

Events are acknowledged once they are fsync'ed on the log folder's file system (an object store
cannot append or fsync); this thread then copies each file to the same path under the bucket:
``impressions/date=.../<writer>-<n>.jsonl``. A file is copied whole, and copied again if it grew
since (a writer that was idle, or killed, never closed it). What was copied is recorded beside the
file (``.<name>.uploaded``, the size copied), so a restarted replica does not copy it again and
every replica sharing the folder may copy any file: the copies are identical.

A bucket that is slow or unreachable must not fill the disk unseen: once more than
``events.max_unuploaded_mb`` waits to be copied, the log refuses events with 507 and drops
impressions (counted), as for a full disk, until the copies catch up.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Callable

from common.storage import filesystem

log = logging.getLogger("ray.serve")

CHUNK = 8 * 2**20


def _marker(path: Path) -> Path:
    return path.with_name(f".{path.name}.uploaded")


def uploaded_size(path: Path) -> int:
    """How many bytes of ``path`` the bucket holds (0: none yet)."""
    try:
        return int(_marker(path).read_text() or 0)
    except (OSError, ValueError):
        return 0


class LogUploader:
    """One thread that copies the log folder's files to ``uri`` every ``every_s`` seconds.

    ``busy`` says which files this writer is appending to now: such a file is copied only once it
    has been quiet for ``every_s`` (the writer starts a new file every ``every_s``, so most copies
    are of closed files, each copied once)."""

    def __init__(self, folder, uri: str, every_s: float, max_behind_bytes: int,
                 busy: Callable[[], set[str]] = set):
        self.folder = Path(folder)
        self.uri = uri
        self.fs, self.root = filesystem(uri)
        self.root = self.root.rstrip("/")
        self.every_s = every_s
        self.max_behind_bytes = max_behind_bytes
        self.busy = busy
        self.behind_bytes = 0
        self.counts = {"files_uploaded": 0, "upload_failures": 0}
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="firstlight-event-upload", daemon=True)
        self._thread.start()

    @property
    def behind(self) -> bool:
        return self.behind_bytes > self.max_behind_bytes

    def close(self, timeout: float = 10.0) -> None:
        """One last pass (bounded by ``timeout``: a stuck bucket must not hang a stop)."""
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.upload_once()
        self.upload_once(final=True)

    def upload_once(self, final: bool = False) -> int:
        """Copy what changed; returns the number of files copied. ``final``: this writer has stopped
        appending, so its own files are copied too."""
        busy = set() if final else self.busy()
        behind, copied = 0, 0
        for path in sorted(self.folder.glob("*/date=*/*.jsonl")):
            try:
                stat = path.stat()
            except OSError:
                continue
            done = uploaded_size(path)
            if stat.st_size <= done:
                continue
            if str(path) in busy and time.time() - stat.st_mtime < self.every_s:
                behind += stat.st_size - done
                continue
            try:
                self._copy(path, stat.st_size)
            except Exception as err:  # pyarrow raises OSError or ArrowException subclasses
                behind += stat.st_size - done
                self.counts["upload_failures"] += 1
                if self.last_error != str(err):
                    log.warning("firstlight: the event log could not be copied to %s (%s); retrying every %.0f s",
                                self.uri, err, self.every_s)
                self.last_error = str(err)
                continue
            copied += 1
        self.behind_bytes = behind
        if copied and behind == 0:
            self.last_error = None
        return copied

    def _copy(self, path: Path, size: int) -> None:
        """The first ``size`` bytes of ``path`` (a writer may be appending) as the bucket's object."""
        relative = path.relative_to(self.folder).as_posix()
        target = f"{self.root}/{relative}"
        self.fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
        with open(path, "rb") as source, self.fs.open_output_stream(target) as sink:
            left = size
            while left:
                chunk = source.read(min(CHUNK, left))
                if not chunk:
                    break
                sink.write(chunk)
                left -= len(chunk)
        marker = _marker(path)
        temporary = marker.with_name(marker.name + f".{os.getpid()}")
        temporary.write_text(str(size - left))
        os.replace(temporary, marker)
        self.counts["files_uploaded"] += 1
