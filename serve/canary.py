"""A canary: a second version (model + index, and its own reranker if it has one) served to a share of
traffic beside the active one (the control), until an admin, or `firstlight loop`, promotes it or
rolls it back.

The canary lives in STATE/canary.json, replaced atomically like the active version, so it survives
restarts and every gateway replica serves the same one. Assignment is sticky per session: a visit
that sends ``session.id`` sees one arm for the canary's whole life (a hash of the id and the
canary's id, compared with the share); a request without one is assigned at random. The arm is in
each reply's request_id, so events are counted for the arm that served the list (serve/event_log.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

from serve.versions import Version, replace_durably

log = logging.getLogger("ray.serve")


def in_canary(session_id: str, canary_id: str, share: float) -> bool:
    """Sticky: the same session, the same canary, the same answer, on every replica."""
    digest = hashlib.sha256(f"{canary_id}\n{session_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


class CanaryStore:
    def __init__(self, state_dir: str):
        self.path = Path(state_dir) / "canary.json"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._seen: tuple[tuple, dict | None] | None = None

    def get(self) -> dict | None:
        """{"version": Version, "share", "started", "id"} of the running canary, or None."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        stamp = (st.st_mtime_ns, st.st_ino)
        if self._seen is None or self._seen[0] != stamp:
            try:
                data = json.loads(self.path.read_text())
                data = None if data is None else {**data, "version": Version.saved(data["version"])}
            except (ValueError, KeyError, TypeError) as err:
                log.warning("firstlight: %s is damaged (%s); no canary is served", self.path, err)
                data = None
            self._seen = (stamp, data)
        return self._seen[1]

    def start(self, version: Version, share: float) -> dict:
        self._write({"version": version.fields(), "share": share, "started": time.time(), "id": version.id})
        return self.get()

    def clear(self) -> None:
        self._write(None)

    def _write(self, data) -> None:
        replace_durably(self.path, data)


def public(canary: dict | None) -> dict | None:
    if canary is None:
        return None
    return {"version": canary["version"].public(), "share": canary["share"], "started": canary["started"]}
