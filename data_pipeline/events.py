"""The event log: what the server showed (impressions) and what shoppers did next (events), as
JSON Lines files that Ray Data reads. docs/events.md documents the schema.

Layout under the log folder (the serving state's ``events/`` by default)::

    impressions/date=2026-12-07/<writer>-<n>.jsonl   one line per ranked list the server returned
    events/date=2026-12-07/<writer>-<n>.jsonl        one line per click, add_to_cart or purchase

Each gateway replica (and each simulator) is one ``<writer>``: writers never share a file, so no
lock is needed across processes, and a file a writer was killed in the middle of ends at most in
one torn line, which readers skip (it was never acknowledged).

An impression::

    {"request_id": "r1....", "ts": 1765000000.0, "session_id": "s-42" | null, "text": "as sent",
     "query": "as ranked", "version": "v3", "arm": "control", "items": ["id at position 1", ...],
     "swap": [1, 7] | null, "reranked": true}

``swap`` says the ranking's products at those two positions (1-based) were exchanged before the
list was returned: the small randomised share of traffic that position-bias estimates come from.

An event::

    {"request_id": "r1....", "ts": 1765000012.5, "type": "click", "product_id": "100234",
     "position": 3 | null, "arm": "control", "shown_at": 1765000000.0}

``ts`` is when the server received the event, ``shown_at`` when it returned the list. ``position``
is where the product was shown, when the replica that took the event still held the impression;
readers join events to impressions by ``request_id`` either way.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from common.errors import ConfigError
from common.storage import exists, filesystem, is_uri, join

log = logging.getLogger(__name__)

IMPRESSIONS = "impressions"
EVENTS = "events"
EVENT_TYPES = ("click", "add_to_cart", "purchase")
IMPRESSION_COLUMNS = ("request_id", "ts", "session_id", "text", "query", "version", "arm", "items", "swap",
                      "reranked")
EVENT_COLUMNS = ("request_id", "ts", "type", "product_id", "position", "arm", "shown_at")


def _parse(lines: list[str], columns: tuple[str, ...]) -> list[dict]:
    rows = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:  # a torn last line (its writer was killed mid-append; never acknowledged)
            continue
        if isinstance(record, dict) and record.get("request_id"):
            rows.append({c: record.get(c) for c in columns})
    return rows


def _files(folder, stream: str) -> list[str]:
    """The stream's files, under a local folder or a bucket (``events.upload_to``: the same layout)."""
    if not is_uri(folder):
        return sorted(str(p) for p in (Path(folder) / stream).glob("date=*/*.jsonl"))
    import pyarrow.fs as pafs

    fs, root = filesystem(join(str(folder), stream))
    infos = fs.get_file_info(pafs.FileSelector(root.rstrip("/"), recursive=True, allow_not_found=True))
    scheme = str(folder).split("://", 1)[0]
    return sorted(f"{scheme}://{i.path}" for i in infos if i.type == pafs.FileType.File and i.path.endswith(".jsonl")
                  and i.path.rsplit("/", 2)[-2].startswith("date="))


def _lines(path: str) -> list[str]:
    if not is_uri(path):
        return Path(path).read_text(errors="replace").splitlines()
    fs, inner = filesystem(path)
    with fs.open_input_stream(inner) as fh:
        return fh.read().decode(errors="replace").splitlines()


def read_stream(folder, stream: str) -> pd.DataFrame:
    """Every complete record of one stream (``impressions`` or ``events``) under ``folder``, read with
    Ray Data (line by line: a torn line is skipped, not an error that loses the file)."""
    columns = IMPRESSION_COLUMNS if stream == IMPRESSIONS else EVENT_COLUMNS
    files = _files(folder, stream)
    if not files:
        return pd.DataFrame(columns=list(columns))
    import ray.data

    def parse(batch: dict) -> dict:
        rows = _parse(list(batch["text"]), columns)
        # one JSON column: items and swap are lists, which a columnar batch would reshape
        return {"record": [json.dumps(r, ensure_ascii=False) for r in rows]}

    records = ray.data.read_text(files).map_batches(parse, batch_format="numpy").take_all()
    return pd.DataFrame([json.loads(r["record"]) for r in records], columns=list(columns))


def read_log(folder) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(impressions, events) of a log folder; events whose request has no impression are dropped
    (logged): nothing can be learned from a click without the list it was made on."""
    folder = str(folder) if is_uri(folder) else Path(folder)
    if not (exists(join(str(folder), IMPRESSIONS)) if is_uri(folder) else (folder / IMPRESSIONS).is_dir()):
        raise ConfigError("events", f"{folder} holds no event log (no {IMPRESSIONS}/ folder)",
                          "pass the folder the server logs to (SERVE_STATE/events by default), or the bucket "
                          "it copies the log to (events.upload_to)")
    impressions = read_stream(folder, IMPRESSIONS).drop_duplicates("request_id", keep="first")
    events = read_stream(folder, EVENTS)
    known = events["request_id"].isin(set(impressions["request_id"]))
    if (~known).any():
        log.warning("[events] %d of %d events name a request with no logged impression: skipped",
                    int((~known).sum()), len(events))
    return impressions.reset_index(drop=True), events[known].reset_index(drop=True)


def arm_counts(folder, since: float) -> dict[str, dict[str, float]]:
    """Per arm, the lists shown since ``since`` (unix seconds) and the clicks, carts and purchases on
    them, read straight from the files (cheap enough to poll while a canary runs)."""
    arms: dict[str, dict] = {}
    listed: dict[str, str] = {}
    clicks_per_list: dict[str, int] = {}
    for path in _files(folder, IMPRESSIONS):
        for record in _parse(_lines(path), ("request_id", "ts", "arm")):
            if (record["ts"] or 0) >= since and record["arm"]:
                listed[record["request_id"]] = record["arm"]
                arms.setdefault(record["arm"], {"lists": 0, "click": 0, "add_to_cart": 0, "purchase": 0})["lists"] += 1
    seen = set()
    for path in _files(folder, EVENTS):
        for record in _parse(_lines(path), ("request_id", "type", "product_id")):
            arm = listed.get(record["request_id"])
            key = (record["request_id"], record["type"], record["product_id"])
            if arm is None or record["type"] not in EVENT_TYPES or key in seen:
                continue
            seen.add(key)
            arms[arm][record["type"]] += 1
            if record["type"] == "click":
                clicks_per_list[record["request_id"]] = clicks_per_list.get(record["request_id"], 0) + 1
    for arm, counts in arms.items():  # clicks per list: its mean and variance, for the canary's decision
        per_list = [clicks_per_list.get(r, 0) for r, a in listed.items() if a == arm]
        counts["ctr"] = sum(per_list) / len(per_list) if per_list else 0.0
        counts["ctr_var"] = float(pd.Series(per_list).var(ddof=1)) if len(per_list) > 1 else 0.0
    return arms
