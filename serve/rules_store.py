"""Merchandising rules on disk, one file per model + index version: ``STATE/rules/<version>.json``.

The file holds the rules as they were sent (``{"revision": n, "rules": [...]}``) and is written
whole: to a temporary file, fsync'ed, renamed over the old one, the folder fsync'ed. So an
acknowledged change survives a crash, and a reader (another gateway replica) never sees half a file.
Writers take a lock file, so two replicas changing rules at once do not lose either change. Each
replica re-reads the file when its size or modification time changes (one ``stat`` per request).

A rule in the file that no longer checks (the catalogue lost the attribute it filters on) is skipped
with a warning naming it, never a failed request.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from contextlib import contextmanager
from pathlib import Path

from ranking.filters import FilterError
from ranking.rules import Rule, parse_rule
from serve.live_index import StorageFull

log = logging.getLogger("ray.serve")

MAX_RULES = 500


class RulesStore:
    def __init__(self, state_dir: str, schema: dict[str, str], max_position: int):
        self.folder = Path(state_dir) / "rules"
        self.schema, self.max_position = schema, max_position
        self._cache: dict[str, tuple[tuple, list[Rule]]] = {}
        self._lock = threading.Lock()

    def path(self, version_id: str) -> Path:
        return self.folder / f"{version_id}.json"

    # -- reading --------------------------------------------------------------------------------
    def rules(self, version_id: str) -> list[Rule]:
        """The version's rules, re-read when the file changed."""
        path = self.path(version_id)
        try:
            stat = path.stat()
        except FileNotFoundError:
            return []
        key = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        with self._lock:
            cached = self._cache.get(version_id)
            if cached is None or cached[0] != key:
                cached = (key, self._parse(path, self._read(path)["rules"]))
                self._cache[version_id] = cached
        return cached[1]

    def listing(self, version_id: str) -> dict:
        return self._read(self.path(version_id))

    @staticmethod
    def _read(path: Path) -> dict:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and isinstance(data.get("rules"), list):
                return data
            log.warning("firstlight: %s is not a rules file; no rules are applied until it is rewritten", path)
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as err:
            log.warning("firstlight: %s cannot be read (%s); no rules are applied until it is rewritten", path, err)
        return {"revision": 0, "rules": []}

    def _parse(self, path: Path, specs: list) -> list[Rule]:
        rules = []
        for spec in specs:
            try:
                rules.append(parse_rule(spec, self.schema, self.max_position))
            except FilterError as err:
                log.warning("firstlight: rule %r in %s is skipped: %s: %s", (spec or {}).get("id"), path, err.path,
                            err.message)
        return rules

    # -- writing --------------------------------------------------------------------------------
    def put(self, version_id: str, rules: list[Rule]) -> dict:
        """Add or replace ``rules`` (by id); the file as written."""
        with self._locked(version_id):
            data = self._read(self.path(version_id))
            by_id = {r.get("id"): r for r in data["rules"]}
            by_id.update({r.id: r.source for r in rules})
            if len(by_id) > MAX_RULES:
                raise ValueError(f"a version holds at most {MAX_RULES} rules ({len(by_id)} with these)")
            return self._write(version_id, list(by_id.values()), data["revision"])

    def delete(self, version_id: str, rule_id: str) -> bool:
        with self._locked(version_id):
            data = self._read(self.path(version_id))
            kept = [r for r in data["rules"] if r.get("id") != rule_id]
            if len(kept) == len(data["rules"]):
                return False
            self._write(version_id, kept, data["revision"])
            return True

    def carry(self, old_id: str, new_id: str) -> int:
        """Copy the old version's rules to the new one (a reload); how many."""
        rules = self._read(self.path(old_id))["rules"]
        if not rules:
            return 0
        with self._locked(new_id):
            self._write(new_id, rules, self._read(self.path(new_id))["revision"])
        return len(rules)

    @contextmanager
    def _locked(self, version_id: str):
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / f".{version_id}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _write(self, version_id: str, rules: list[dict], revision: int) -> dict:
        data = {"revision": revision + 1, "rules": rules}
        path = self.path(version_id)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(data, fh, ensure_ascii=False, indent=1)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            folder = os.open(self.folder, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise StorageFull(f"the rules file {path} could not be written "
                              f"({os.strerror(err.errno) if err.errno else err}); nothing was changed") from None
        return data
