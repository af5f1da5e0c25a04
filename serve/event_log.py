"""Logging what was shown and what shoppers did next, so FirstLight can learn from its own traffic
(data_pipeline/events.py has the files' layout and schema; docs/events.md the API).

- ``RequestIds`` issues the ``request_id`` of every recommendation and checks the ones events name:
  an id is signed with a secret every replica shares (created once under the log folder), so any
  replica knows an id the server issued, and its age, without asking the others.
- ``AppendLog`` appends records to this writer's own JSON Lines files from one thread, in groups:
  one write (and for events, one fsync) for everything queued since the last (group commit). Its queue is
  bounded, so a full disk or slow storage never grows memory: impressions are then dropped and
  counted (recommendations go on being served), and events are refused with 507.
- ``choose_swap`` picks the small randomised share of lists whose first product trades places with
  a lower one: the interventions position-bias estimates come from (train/event_pairs.py).
"""

from __future__ import annotations

import base64
import concurrent.futures
import errno
import hashlib
import hmac
import json
import logging
import os
import queue
import secrets
import socket
import struct
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from common.config import check_range
from common.errors import ConfigError, FirstLightError
from common.storage import filesystem, is_uri
from data_pipeline.events import EVENTS, IMPRESSIONS
from serve.event_upload import LogUploader

log = logging.getLogger("ray.serve")

SECRET_FILE = ".request_id_secret"


@dataclass
class EventLogging:
    """Impression logging and the events API. Flags ``--events.swap_share 0.05``, YAML ``events: {...}``."""

    log: bool = field(default=True, metadata={
        "help": "log every recommendation's shown list and accept POST /v1/events (false: neither; replies "
                "still carry a request_id)"})
    dir: str | None = field(default=None, metadata={"help": "log folder; default SERVE_STATE/events"})
    swap_share: float = field(default=0.02, metadata={
        "help": "share of lists whose first product trades places with one at a random lower position (up "
                "to swap_depth): what `firstlight train --events` estimates position bias from; 0 turns it off"})
    swap_depth: int = field(default=10, metadata={"help": "lowest position a swap reaches"})
    max_queue: int = field(default=10000, metadata={
        "help": "records waiting to be written at most; beyond it impressions are dropped (counted) and "
                "events refused with 507"})
    flush_ms: float = field(default=20.0, metadata={"help": "longest a record waits before its group is written"})
    max_age_s: float = field(default=7 * 86400.0, metadata={
        "help": "how long after a recommendation events may name its request_id"})
    file_max_bytes: int = field(default=64 * 2**20, metadata={"help": "a log file is closed and a new one begun at this size"})
    upload_to: str | None = field(default=None, metadata={
        "help": "a bucket URI (s3://bucket/events) the log's files are copied to as they close, for training "
                "on a cluster; the log folder stays the file system events are fsync'ed on"})
    upload_every_s: float = field(default=60.0, metadata={
        "help": "with upload_to: a writer starts a new file this often, and files are copied this often"})
    max_unuploaded_mb: float = field(default=1024.0, metadata={
        "help": "with upload_to: beyond this much waiting to be copied (a slow or unreachable bucket), events "
                "are refused with 507 and impressions dropped until the copies catch up"})

    def validate(self, prefix: str = "events.") -> None:
        check_range(prefix + "swap_share", self.swap_share, 0.0, 1.0)
        check_range(prefix + "swap_depth", self.swap_depth, 2)
        check_range(prefix + "max_queue", self.max_queue, 1)
        check_range(prefix + "flush_ms", self.flush_ms, 0.0)
        check_range(prefix + "max_age_s", self.max_age_s, 0.0, low_inclusive=False)
        check_range(prefix + "file_max_bytes", self.file_max_bytes, 1024)
        check_range(prefix + "upload_every_s", self.upload_every_s, 0.0, low_inclusive=False)
        check_range(prefix + "max_unuploaded_mb", self.max_unuploaded_mb, 0.0, low_inclusive=False)
        if self.upload_to is not None:
            if not is_uri(self.upload_to):
                raise ConfigError(prefix + "upload_to", f"{self.upload_to!r} is not a bucket URI",
                                  "pass s3://bucket/path or gs://bucket/path, or leave it unset (the log folder is "
                                  "then the only copy)")
            try:
                filesystem(self.upload_to)
            except FirstLightError as err:
                raise ConfigError(prefix + "upload_to", str(err), "check the URI and the storage credentials in "
                                  "the environment") from None


# -- request ids ----------------------------------------------------------------------------------
ARMS = ("control", "canary")


class RequestIds:
    """``r1.<issued ms, arm, 8 random bytes>.<signature>``: URL-safe, 46 characters. The arm is in the
    id so that any replica attributes an event to the arm that served the list."""

    def __init__(self, folder: Path):
        self.key = _shared_secret(Path(folder) / SECRET_FILE)

    def issue(self, now: float | None = None, arm: str = "control") -> str:
        body = struct.pack(">QB", int(1000 * (time.time() if now is None else now)), ARMS.index(arm)) + \
            secrets.token_bytes(8)
        return "r1." + _b64(body) + "." + _b64(self._sign(body))

    def read(self, request_id: str) -> tuple[float, str] | None:
        """(when the server issued ``request_id``, its arm); None for an id it did not issue."""
        parts = request_id.split(".") if isinstance(request_id, str) and len(request_id) <= 64 else []
        if len(parts) != 3 or parts[0] != "r1":
            return None
        try:
            body, signature = _unb64(parts[1]), _unb64(parts[2])
        except ValueError:
            return None
        if len(body) != 17 or _b64(body) != parts[1] or _b64(signature) != parts[2] \
                or not hmac.compare_digest(signature, self._sign(body)):  # one spelling per id
            return None
        issued, arm = struct.unpack(">QB", body[:9])
        return (issued / 1000, ARMS[arm]) if arm < len(ARMS) else None

    def _sign(self, body: bytes) -> bytes:
        return hmac.new(self.key, body, hashlib.sha256).digest()[:12]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as err:
        raise ValueError(str(err)) from None


def _shared_secret(path: Path) -> bytes:
    """The key every replica signs with: created once (the first replica wins the race), then read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # another replica is writing it
            key = path.read_bytes()
            if len(key) == 32:
                return key
            time.sleep(0.02)
        raise RuntimeError(f"{path} is not a 32-byte key: delete it (request ids issued before become unknown)")
    key = secrets.token_bytes(32)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
        fh.flush()
        os.fsync(fh.fileno())
    return key


def choose_swap(rng, length: int, share: float, depth: int) -> tuple[int, int] | None:
    """(1, j) with j uniform in 2..min(length, depth), for a ``share`` of lists; else None."""
    top = min(length, depth)
    if top < 2 or share <= 0 or rng.random() >= share:
        return None
    return 1, int(rng.integers(2, top + 1))


# -- the writer -----------------------------------------------------------------------------------
class LogFull(OSError):
    """The log could not take the records: a full disk, a queue full because storage is slow, or a
    bucket the files are copied to that is too far behind."""


@dataclass
class _Pending:
    stream: str
    line: bytes
    done: concurrent.futures.Future | None


class AppendLog:
    """One writer's append-only files under ``folder``; records of both streams go through one queue
    and one thread. ``append`` returns a future that resolves once the record is on disk (fsync'ed),
    or fails with LogFull; ``offer`` drops the record (and counts it) rather than wait or fail."""

    def __init__(self, folder, cfg: EventLogging, writer: str | None = None):
        self.folder = Path(folder)
        self.cfg = cfg
        self.writer = writer or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.queue: queue.Queue[_Pending | None] = queue.Queue(maxsize=cfg.max_queue)
        self.counts = {"impressions_logged": 0, "impressions_dropped": 0, "events_logged": 0, "events_refused": 0,
                       "write_failures": 0}
        self._files: dict[str, tuple[str, float, object]] = {}  # stream -> (date, when opened, open file)
        self._part = 0
        self._thread = threading.Thread(target=self._run, name="firstlight-event-log", daemon=True)
        self._thread.start()
        self.uploader = LogUploader(self.folder, cfg.upload_to, cfg.upload_every_s, int(cfg.max_unuploaded_mb * 2**20),
                                    busy=lambda: {fh.name for _, _, fh in list(self._files.values())}) \
            if cfg.upload_to else None

    def stats(self) -> dict:
        """The counts, and with a bucket: files copied, failed copies, bytes waiting to be copied."""
        if self.uploader is None:
            return dict(self.counts)
        return {**self.counts, **self.uploader.counts, "unuploaded_bytes": self.uploader.behind_bytes}

    def _behind(self) -> str | None:
        if self.uploader is not None and self.uploader.behind:
            return (f"{self.uploader.behind_bytes / 2**20:.0f} MiB of the log wait to be copied to {self.cfg.upload_to} "
                    f"(events.max_unuploaded_mb is {self.cfg.max_unuploaded_mb:g}); nothing was written, retry later")
        return None

    # called from request handlers
    def offer(self, stream: str, record: dict) -> bool:
        """Queue a record whose loss is tolerable (an impression): False, counted, when the queue is full."""
        try:
            if self._behind():
                raise queue.Full
            self.queue.put_nowait(_Pending(stream, _line(record), None))
            return True
        except queue.Full:
            self.counts["impressions_dropped"] += 1
            return False

    def append(self, stream: str, records: list[dict]) -> concurrent.futures.Future:
        """Queue records that must not be lost (events): the future resolves once they are fsync'ed."""
        done: concurrent.futures.Future = concurrent.futures.Future()
        line = b"".join(_line(r) for r in records)
        behind = self._behind()
        if behind:
            self.counts["events_refused"] += len(records)
            done.set_exception(LogFull(errno.EAGAIN, f"the event log's bucket is behind: {behind}"))
            return done
        try:
            self.queue.put_nowait(_Pending(stream, line, done))
        except queue.Full:
            self.counts["events_refused"] += len(records)
            done.set_exception(LogFull(errno.EAGAIN, f"the event log is {self.cfg.max_queue} records behind "
                                       "(storage is slow or full); nothing was written, retry later"))
        return done

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (waiting at most ``timeout`` seconds: a stuck disk must not hang a stop)."""
        try:
            self.queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)
        if self.uploader is not None:  # the files this writer held are closed now: copied in a last pass
            self.uploader.close(timeout)

    # the writer thread
    def _run(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:
                break
            group = [first]
            deadline = time.monotonic() + self.cfg.flush_ms / 1000
            stop = False
            while len(group) < 4096:  # a group is written with one fsync per stream
                try:
                    item = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                group.append(item)
            self._write(group)
            if stop:
                break
        for _, _, fh in self._files.values():
            fh.close()

    def _write(self, group: list[_Pending]) -> None:
        for stream in (IMPRESSIONS, EVENTS):
            mine = [p for p in group if p.stream == stream]
            if not mine:
                continue
            try:
                self._append(stream, b"".join(p.line for p in mine))
            except OSError as err:
                self.counts["write_failures"] += 1
                reason = os.strerror(err.errno) if err.errno else str(err)
                log.warning("firstlight: the event log could not write %d %s (%s)", len(mine), stream, reason)
                for p in mine:
                    if p.done is None:
                        self.counts["impressions_dropped"] += 1
                    else:
                        self.counts["events_refused"] += p.line.count(b"\n")
                        p.done.set_exception(LogFull(err.errno or errno.EIO, f"the event log could not be written "
                                                     f"({reason}); nothing was written"))
                continue
            for p in mine:
                if p.done is None:
                    self.counts["impressions_logged"] += 1
                else:
                    self.counts["events_logged"] += p.line.count(b"\n")
                    p.done.set_result(True)

    def _append(self, stream: str, data: bytes) -> None:
        fh = self._file(stream)
        start = fh.tell()
        try:
            view = memoryview(data)
            while view:
                view = view[fh.write(view):]
            if stream == EVENTS:  # acknowledged: on disk first. Impressions are acknowledged to no one: in
                os.fsync(fh.fileno())  # the OS's hands they survive a killed process, and skip fsync's stalls
        except OSError:
            try:  # undo the partial group, so no acknowledged record is ever joined to a torn one
                fh.truncate(start)
                fh.seek(start)
            except OSError:
                self._files.pop(stream, None)
            raise

    def _file(self, stream: str):
        """This writer's open file of ``stream`` for today; a new one past the size limit or the date."""
        date = time.strftime("%Y-%m-%d", time.gmtime())
        held = self._files.get(stream)
        if held is not None:
            held_date, opened, fh = held
            fresh = self.cfg.upload_to is None or time.monotonic() - opened < self.cfg.upload_every_s
            if held_date == date and fh.tell() < self.cfg.file_max_bytes and fresh:
                return fh
            fh.close()
        folder = self.folder / stream / f"date={date}"
        folder.mkdir(parents=True, exist_ok=True)
        while True:
            self._part += 1
            path = folder / f"{self.writer}-{self._part:05d}.jsonl"
            if not path.exists():
                break
        fh = open(path, "ab", buffering=0)  # unbuffered: a failed write leaves nothing to flush later
        self._files[stream] = (date, time.monotonic(), fh)
        return fh


def _line(record: dict) -> bytes:
    return (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


class ShownLists:
    """The lists this replica returned lately, by request_id (at most ``size``, oldest forgotten first):
    an event on one of them is checked against what was shown, and gets its position."""

    def __init__(self, size: int = 50_000):
        self.size = size
        self._lists: OrderedDict[str, tuple[tuple[str, ...], str]] = OrderedDict()

    def add(self, request_id: str, items: list[str], arm: str) -> None:
        self._lists[request_id] = (tuple(items), arm)
        while len(self._lists) > self.size:
            self._lists.popitem(last=False)

    def get(self, request_id: str) -> tuple[tuple[str, ...], str] | None:
        return self._lists.get(request_id)


class ArmCounts:
    """Per arm: requests, impressions (products shown), clicks, add_to_cart, purchases; CTR derived."""

    KINDS = ("requests", "impressions", "click", "add_to_cart", "purchase")

    def __init__(self):
        self.counts: dict[str, dict[str, int]] = {}

    def add(self, arm: str, kind: str, n: int = 1) -> None:
        self.counts.setdefault(arm, dict.fromkeys(self.KINDS, 0))[kind] += n

    def public(self) -> dict:
        return {arm: {"requests": c["requests"], "impressions": c["impressions"], "clicks": c["click"],
                      "add_to_cart": c["add_to_cart"], "purchases": c["purchase"],
                      "ctr": c["click"] / c["impressions"] if c["impressions"] else None}
                for arm, c in self.counts.items()}
