"""Facet counts for a filter sidebar: per value of keyword fields, per bucket of number fields.

Counted over the query's candidates: the first stage's top ``depth`` products (default 200) for the
request's text, within its filter. That is the set a shopper is browsing (a semantic ranking has no
"all matches" set: every product has some score), so a count says how many of the products the
ranking would consider carry that value; it is not a count over the whole catalogue.

A request asks::

    {"fields": ["brand", "season"], "ranges": {"price": [100, 200, 300]}, "depth": 200}

and the reply holds, per field, ``[{"value": "Makita", "count": 12}, ...]`` (most frequent first, at
most ``top`` values) and, per range field, one bucket per interval: below 100, 100 to 200, 200 to 300,
300 and above (a product without a value is in none).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from ranking.filters import FilterError, require_attribute

MAX_FIELDS = 10
MAX_BOUNDARIES = 20
MAX_DEPTH = 1000
DEFAULT_DEPTH = 200
TOP_VALUES = 50
FIELDS = ("fields", "ranges", "depth")


@dataclass(frozen=True)
class FacetRequest:
    fields: tuple = ()  # keyword, keywords or boolean fields: counts per value
    ranges: tuple = ()  # (number field, ascending boundaries)
    depth: int = DEFAULT_DEPTH


def parse_facets(spec, schema: dict[str, str]) -> FacetRequest:
    """``spec`` (decoded JSON) checked against the catalogue's schema; raises FilterError (path, code)."""
    if not isinstance(spec, dict):
        raise FilterError("facets", "wrong_type", 'facets is an object: {"fields": [...], "ranges": {...}, "depth": N}')
    unknown = [k for k in spec if k not in FIELDS]
    if unknown:
        raise FilterError(unknown[0], "unknown_field", f"facets take {', '.join(FIELDS)}; not {unknown[0][:40]!r}")
    fields = spec.get("fields", [])
    if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
        raise FilterError("fields", "wrong_type", "'fields' is a list of attribute names")
    ranges = spec.get("ranges", {})
    if not isinstance(ranges, dict):
        raise FilterError("ranges", "wrong_type", "'ranges' maps number attributes to ascending boundaries")
    if len(fields) + len(ranges) > MAX_FIELDS:
        raise FilterError("fields", "too_large", f"at most {MAX_FIELDS} facets a request", MAX_FIELDS)
    for i, name in enumerate(fields):
        if require_attribute(name, schema, f"fields.{i}") == "number":
            raise FilterError(f"fields.{i}", "wrong_type", f"{name!r} is a number: count it in 'ranges' with "
                              "boundaries")
    checked = []
    for name, bounds in ranges.items():
        where = f"ranges.{name}"
        kind = require_attribute(name, schema, where)
        if kind != "number":
            raise FilterError(where, "wrong_type", f"ranges count number attributes; {name!r} is a {kind}")
        if not isinstance(bounds, list) or not 1 <= len(bounds) <= MAX_BOUNDARIES or not all(
                isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b) for b in bounds):
            raise FilterError(where, "wrong_type", f"boundaries are 1 to {MAX_BOUNDARIES} finite numbers",
                              MAX_BOUNDARIES)
        if any(b >= c for b, c in zip(bounds, bounds[1:])):
            raise FilterError(where, "invalid_filter", "boundaries must ascend strictly, e.g. [100, 200, 300]")
        checked.append((name, tuple(float(b) for b in bounds)))
    depth = spec.get("depth", DEFAULT_DEPTH)
    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= MAX_DEPTH:
        raise FilterError("depth", "out_of_range", f"'depth' is a whole number from 1 to {MAX_DEPTH}", MAX_DEPTH)
    return FacetRequest(tuple(dict.fromkeys(fields)), tuple(checked), depth)


def count_facets(candidates: list[dict], request: FacetRequest, top: int = TOP_VALUES) -> dict:
    """Counts over ``candidates`` (hits carrying ``attributes``), as the reply shows them."""
    out: dict = {}
    for name in request.fields:
        counts: Counter = Counter()
        for hit in candidates:
            value = (hit.get("attributes") or {}).get(name)
            if value is None:
                continue
            counts.update(set(value) if isinstance(value, list) else {value})
        out[name] = [{"value": v, "count": c} for v, c in
                     sorted(counts.items(), key=lambda vc: (-vc[1], str(vc[0])))[:top]]
    for name, bounds in request.ranges:
        edges = (-math.inf, *bounds, math.inf)
        buckets = []
        for low, high in zip(edges, edges[1:]):
            count = sum(1 for hit in candidates if _within((hit.get("attributes") or {}).get(name), low, high))
            buckets.append({"gte": None if low == -math.inf else low, "lt": None if high == math.inf else high,
                            "count": count})
        out[name] = buckets
    return out


def _within(value, low: float, high: float) -> bool:
    return value is not None and low <= value < high
