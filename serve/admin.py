"""The admin side of the gateway: products added, changed or deleted through the API, and reloads
to another model + index (with the API's item changes carried over). Routes and auth stay in
serve/gateway.py; this module knows the deployments' handles and the active version.

Writes are never retried (a change may have been logged before its replica died).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from pathlib import Path

from common.storage import exists, is_uri, join, read_text
from common.text import normalize_text, product_text
from model.folders import resolve_model_path
from serve.api import ApiError, ReloadRequest
from serve.versions import Version

log = logging.getLogger("ray.serve")


def last_line(err: BaseException) -> str:
    """The exception's own message: Ray wraps a replica's error in its traceback."""
    lines = [line for line in str(err).splitlines() if line.strip()]
    return re.sub(r"^[\w.]+(Error|Unavailable|Exception): ", "", lines[-1].strip()) if lines else type(err).__name__


def refused(outcome: dict) -> None:
    if "refused" in outcome:
        raise ApiError(507, "insufficient_storage", "body", outcome["refused"])


def index_unusable(index_dir: str) -> str | None:
    """Why a saved version's index folder cannot serve, or None (used when a restart finds a reload)."""
    try:
        return None if exists(join(index_dir, "index.faiss")) else f"{index_dir} holds no index.faiss any more"
    except Exception as err:  # noqa: BLE001 - unreachable storage is a reason too
        return f"{index_dir} cannot be read ({err})"


def within(path: str, roots) -> bool:
    """``path`` is one of ``roots`` or below one (local folders resolved, bucket URIs by prefix)."""
    if is_uri(path):
        return any(is_uri(r) and (path.rstrip("/") + "/").startswith(r.rstrip("/") + "/") for r in roots)
    resolved = Path(path).expanduser().resolve()
    return any(not is_uri(r) and resolved.is_relative_to(Path(r)) for r in roots)


def _outside(name: str, value: str, roots) -> ApiError:
    return ApiError(422, "outside_reload_roots", name, f"{value} is not below the folders reloads may load from "
                    f"({', '.join(roots)}); the server's --reload_roots setting names them")


def checked_reload_target(body: ReloadRequest, roots) -> tuple[str, str]:
    """(index folder, model) of a reload, or a 422 naming what is wrong with it. Only folders below
    ``roots`` are read: an admin token does not open the rest of the machine."""
    for name in ("index_dir", "model"):
        value = getattr(body, name)
        if value is not None and ("\x00" in value or not value.strip()):
            raise ApiError(422, "invalid_path", name, f"'{name}' is empty or holds a NUL character")
    if not within(body.index_dir, roots):
        raise _outside("index_dir", body.index_dir, roots)
    if body.model:
        _check_model(body.model, roots)
    try:
        index_dir = body.index_dir if is_uri(body.index_dir) else str(Path(body.index_dir).expanduser().resolve())
        found = exists(join(index_dir, "index.faiss"))
    except Exception as err:  # noqa: BLE001 - an unknown URI scheme, no credentials, an unreadable folder
        raise ApiError(422, "unreadable", "index_dir", f"{body.index_dir} cannot be read: {last_line(err)}") from None
    if not found:
        raise ApiError(422, "not_found", "index_dir", f"{body.index_dir} holds no FAISS index (index.faiss)")
    if body.model:
        return index_dir, body.model
    try:
        manifest = json.loads(read_text(join(index_dir, "manifest.json")))
        model = manifest.get("model") if isinstance(manifest, dict) else None
    except Exception as err:  # noqa: BLE001 - missing or damaged manifest
        raise ApiError(422, "not_an_index", "index_dir", f"{body.index_dir} has no readable manifest.json "
                       f"({last_line(err)}); rebuild it with `firstlight index`") from None
    if not model:
        raise ApiError(422, "missing_field", "model", "the index does not record its model: pass 'model'")
    return index_dir, model


def checked_reranker(path: str, roots) -> str:
    """A canary's reranker: a model folder below the reload roots."""
    if "\x00" in path or not path.strip():
        raise ApiError(422, "invalid_path", "reranker", "'reranker' is empty or holds a NUL character")
    if not within(path, roots):
        raise _outside("reranker", path, roots)
    resolved = path if is_uri(path) else str(Path(path).expanduser().resolve())
    if not exists(join(resolved, "config.json")):
        raise ApiError(422, "not_found", "reranker", f"{path} holds no model (config.json): pass the folder "
                       "`firstlight train-reranker` wrote")
    return resolved


def _check_model(model: str, roots) -> None:
    """A reload's model is a folder below the roots, or a model FirstLight ships as a package: a hub
    name would have the reload wait on the network (or, offline, on its retries)."""
    if is_uri(model) or Path(model).expanduser().exists():
        if not within(model, roots):
            raise _outside("model", model, roots)
        return
    if resolve_model_path(model) == model:  # not a folder, not a packaged model: a hub name
        raise ApiError(422, "unloadable", "model", f"{model!r} is not a model folder below the reload roots; "
                       "a reload does not fetch from a model hub: fetch or copy the model first")


class Admin:
    """Item changes and reloads over the Encoder and Retriever handles; ``prepare_version(version)``
    readies what the gateway keeps per version (its speller) before a switch."""

    def __init__(self, encoder, retriever, active, prepare_version, reload_roots=(), carry_rules=None, canaries=None):
        """``carry_rules(old_id, new_id)``: copies the merchandising rules to a version switched to;
        ``canaries``: the CanaryStore (serve/canary.py), whose version gets every item change too."""
        self.encoder, self.retriever, self.active = encoder, retriever, active
        self.canaries = canaries
        self.carry_rules = carry_rules
        self.reload_roots = tuple(reload_roots)
        self.prepare_version = prepare_version
        self.reload_lock = asyncio.Lock()

    async def upsert(self, items, read, attributes: list | None = None) -> dict:
        """``items``: checked API items; ``read``: the retried read used for encoding; ``attributes``:
        per item its checked attributes, or None to keep what the product has."""
        texts = [product_text(item.title, item.description) for item in items]
        version = self.active.get()
        attributes = attributes or [None] * len(items)
        outcome = None
        for target in self._targets(version):  # a running canary gets every change too: searchable at once
            vectors = await read(self.encoder.encode, target.model, texts, "passage")
            records = [{"id": item.id, "title": normalize_text(item.title), "text": text, "vector": vector.tolist(),
                        "attributes": attrs} for item, text, vector, attrs in zip(items, texts, vectors, attributes)]
            done = await self.retriever.upsert.remote(target.describe(), records)  # a write: never retried
            refused(done)
            outcome = outcome or done
        return {"upserted": [item.id for item in items], "items_in_index": outcome["items"],
                "version": version.public()}

    def _targets(self, version: Version) -> list[Version]:
        canary = self.canaries.get() if self.canaries is not None else None
        return [version] + ([canary["version"]] if canary and canary["version"].id != version.id else [])

    async def delete(self, product_id: str) -> dict:
        version = self.active.get()
        outcome = await self.retriever.delete.remote(version.describe(), product_id)
        refused(outcome)
        for canary in self._targets(version)[1:]:
            refused(await self.retriever.delete.remote(canary.describe(), product_id))
        if not outcome["deleted"]:
            raise ApiError(404, "not_found", "id", f"no product {product_id!r} in the index")
        return {"deleted": product_id, "version": version.public()}

    async def reload(self, body: ReloadRequest) -> dict:
        async with self.reload_lock:
            return await self._switch(body)

    async def _switch(self, body: ReloadRequest) -> dict:
        """Load the new version on both deployments, carry over the API's item changes, then switch.
        Anything wrong with the new version is a 422 before the switch: the old one keeps serving."""
        index_dir, model = await asyncio.to_thread(checked_reload_target, body, self.reload_roots)
        old, new = self.active.get(), Version(model, index_dir)
        await self._loadable(new)
        carried = await self._carry(old, new)
        self.active.set(new)
        log.info("firstlight: switched %s -> %s (%s)", old.describe(), new.describe(), carried)
        return {"previous": old.describe(), "active": new.describe(), "carried_over": carried,
                "items_in_index": (await self.retriever.info.remote(new.describe()))["items"]}

    async def _loadable(self, new: Version) -> None:
        """A 422 unless ``new`` loads on the Encoder and the Retriever and answers a real search."""
        model, index_dir = new.model, new.index_dir
        try:
            dim = await self.encoder.dim.remote(model)
        except Exception as err:  # noqa: BLE001 - whatever loading raised, the caller gets the reason
            raise ApiError(422, "unloadable", "model", f"could not load model {model!r}: {last_line(err)}") from None
        try:
            info = await self.retriever.info.remote(new.describe())
        except Exception as err:  # noqa: BLE001 - a damaged index file, an unreadable catalogue
            raise ApiError(422, "unloadable", "index_dir", f"could not load the index in {index_dir}: "
                           f"{last_line(err)}") from None
        if info["dim"] != dim:
            raise ApiError(422, "dimension_mismatch", "model", f"the model makes {dim}-dim vectors, the index holds "
                           f"{info['dim']}-dim ones: pass the model the index was built with")
        try:  # a real search, with the query encoder the Retriever runs for this model loaded
            await self.retriever.ready.remote(new.describe())
        except Exception as err:  # noqa: BLE001
            raise ApiError(422, "unloadable", "model", f"could not search with model {model!r}: "
                           f"{last_line(err)}") from None

    async def _carry(self, old: Version, new: Version) -> str:
        """The API's item changes and the merchandising rules of ``old`` carried to ``new``, and the
        gateway's per-version state readied."""
        carried = "nothing to carry over" if new.id == old.id else await self._carry_over(old, new, new.model)
        if new.id != old.id and self.carry_rules is not None:
            rules = await asyncio.to_thread(self.carry_rules, old.id, new.id)
            carried += f"; {rules} merchandising rule(s)" if rules else ""
        await asyncio.to_thread(self.prepare_version, new.describe())  # off the event loop (about a second)
        return carried

    # -- canaries ------------------------------------------------------------------------------
    async def start_canary(self, body, canaries, has_reranker: bool) -> dict:
        """Serve ``body``'s version to ``body.share`` of traffic beside the active one."""
        async with self.reload_lock:
            if canaries.get() is not None:
                raise ApiError(409, "canary_running", "index_dir", "a canary is running: promote it or roll it "
                               "back first (POST /v1/admin/canary/promote or /rollback)")
            index_dir, model = await asyncio.to_thread(checked_reload_target, body, self.reload_roots)
            reranker = None
            if body.reranker is not None:
                if not has_reranker:
                    raise ApiError(422, "no_reranker", "reranker", "this server runs no reranker: serve with "
                                   "rerank.model set to give a canary its own")
                reranker = await asyncio.to_thread(checked_reranker, body.reranker, self.reload_roots)
            old, new = self.active.get(), Version(model, index_dir, reranker)
            if new.id == old.id:
                raise ApiError(422, "same_version", "index_dir", "that is the active version already")
            await self._loadable(new)
            carried = await self._carry(old, new)
            canary = canaries.start(new, body.share)
            log.info("firstlight: canary %s at %.0f%% beside %s (%s)", new.describe(), 100 * body.share,
                     old.describe(), carried)
            return {"canary": new.describe(), "control": old.describe(), "share": canary["share"],
                    "carried_over": carried}

    async def end_canary(self, canaries, promote: bool) -> dict:
        async with self.reload_lock:
            canary = canaries.get()
            if canary is None:
                raise ApiError(404, "no_canary", "canary", "no canary is running")
            old = self.active.get()
            if promote:
                self.active.set(canary["version"])
            canaries.clear()
            log.info("firstlight: canary %s %s", canary["version"].describe(), "promoted" if promote else "rolled back")
            return {"active": self.active.get().describe(), "previous": old.describe(),
                    "outcome": "promoted" if promote else "rolled back"}

    async def _carry_over(self, old: Version, new: Version, model: str) -> str:
        """Products added or deleted through the API on ``old`` are re-embedded / deleted on ``new``."""
        try:
            added = await self.retriever.added_items.remote(old.describe())
            deleted = await self.retriever.deleted_ids.remote(old.describe())
        except Exception as err:  # noqa: BLE001 - e.g. the old index folder is gone: switching must still work
            log.warning("firstlight: the previous version cannot be read (%s); its item changes are not carried "
                        "over", last_line(err))
            return f"none: the previous version could not be read ({last_line(err)[:200]})"
        if added:
            vectors = await self.encoder.encode.remote(model, [a["text"] for a in added], "passage")
            refused(await self.retriever.upsert.remote(new.describe(), [{**a, "vector": v.tolist()}
                                                                        for a, v in zip(added, vectors)]))
        for pid in deleted:
            refused(await self.retriever.delete.remote(new.describe(), pid))
        return f"{len(added)} added and {len(deleted)} deleted products"
