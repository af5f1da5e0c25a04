"""Merchandising rules: boost, bury or pin products, for every query or for queries matching a pattern.

A rule, as the admin API takes it::

    {"id": "spring-sale", "action": "pin", "ids": ["zh0003"], "position": 1, "query": "*外套*"}
    {"id": "no-refurb", "action": "bury", "filter": {"field": "brand", "eq": "Refurb Co"}}
    {"id": "house-brand", "action": "boost", "filter": {"field": "brand", "eq": "HDX"}, "by": 3}

- ``boost``: each matching product moves up ``by`` places (default 3);
- ``bury``: matching products move below every product that is not buried;
- ``pin``: the product is placed at ``position`` (1-based). By ``ids``: the first id that passes the
  request's filter and is not excluded, fetched if the ranking did not retrieve it; by ``filter``:
  the best-ranked matching product.
- ``query``: a shell-style pattern (``*`` any text, ``?`` one character, case-insensitive) the
  query text must match; absent, the rule applies to every query. Patterns, not regular
  expressions: a pattern cannot make matching slow.

Rules apply after the reranker, in the order bury, boost, pin, and every product a rule moved names
the rule in its ``why``. The server keeps them per model + index version, durably
(serve/rules_store.py), and a reload carries them to the new version.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from common.text import normalize_text
from ranking.filters import Filter, FilterError, matches, parse_filter

ACTIONS = ("boost", "bury", "pin")
FIELDS = ("id", "action", "ids", "filter", "query", "by", "position")
MAX_IDS = 100
MAX_PATTERN = 200
MAX_BY = 100


@dataclass(frozen=True)
class Rule:
    id: str
    action: str
    ids: tuple = ()
    filter: Filter | None = None
    query: str | None = None
    by: int = 3
    position: int = 1
    source: dict | None = None  # the rule as it was sent: what is stored and listed

    def applies_to(self, query: str) -> bool:
        return self.query is None or fnmatch.fnmatchcase(normalize_text(query).lower(), self.query)

    def targets(self, hit: dict) -> bool:
        if self.ids:
            return hit["id"] in self.ids
        return matches(self.filter, hit.get("attributes") or {})

    def describe(self) -> str:
        return {"boost": f"boosted by rule '{self.id}'", "bury": f"buried by rule '{self.id}'",
                "pin": f"pinned at {self.position} by rule '{self.id}'"}[self.action]


def parse_rule(spec, schema: dict[str, str], max_position: int = 100) -> Rule:
    """A checked rule; raises FilterError naming the part at fault ("filter.and.0.field", "query")."""
    if not isinstance(spec, dict):
        raise FilterError("rule", "wrong_type", "a rule is an object with id, action, and ids or filter")
    unknown = [k for k in spec if k not in FIELDS]
    if unknown:
        raise FilterError(unknown[0], "unknown_field", f"a rule takes {', '.join(FIELDS)}; not {unknown[0][:40]!r}")
    rule_id = spec.get("id")
    if not isinstance(rule_id, str) or not 1 <= len(rule_id) <= 100 or rule_id != rule_id.strip() or any(
            ord(c) < 32 or c == "/" for c in rule_id):
        raise FilterError("id", "invalid_id", "a rule id is 1 to 100 characters, no '/', no control characters "
                          "and no leading or trailing spaces")
    action = spec.get("action")
    if action not in ACTIONS:
        raise FilterError("action", "wrong_type", f"action is one of {', '.join(ACTIONS)}")
    ids, expr = spec.get("ids"), spec.get("filter")
    if (ids is None) == (expr is None):
        raise FilterError("ids", "invalid_filter", "a rule targets products by 'ids' or by 'filter' (one of them)")
    if ids is not None:
        if not isinstance(ids, list) or not 1 <= len(ids) <= MAX_IDS or not all(
                isinstance(i, str) and 1 <= len(i) <= 200 for i in ids):
            raise FilterError("ids", "wrong_type", f"'ids' is a list of 1 to {MAX_IDS} product ids", MAX_IDS)
    parsed = None
    if expr is not None:
        try:
            parsed = parse_filter(expr, schema)
        except FilterError as err:
            raise FilterError(f"filter.{err.path}" if err.path != "filter" else "filter", err.code, err.message,
                              err.limit) from None
    query = spec.get("query")
    if query is not None and (not isinstance(query, str) or not 1 <= len(query) <= MAX_PATTERN):
        raise FilterError("query", "wrong_type", f"'query' is a pattern of 1 to {MAX_PATTERN} characters, "
                          "e.g. '*jacket*'", MAX_PATTERN)
    by, position = spec.get("by", 3), spec.get("position", 1)
    if isinstance(by, bool) or not isinstance(by, int) or not 1 <= by <= MAX_BY:
        raise FilterError("by", "out_of_range", f"'by' is a whole number of places from 1 to {MAX_BY}", MAX_BY)
    if isinstance(position, bool) or not isinstance(position, int) or not 1 <= position <= max_position:
        raise FilterError("position", "out_of_range", f"'position' is from 1 to {max_position}", max_position)
    return Rule(rule_id, action, tuple(dict.fromkeys(ids or ())), parsed,
                normalize_text(query).lower() if query else None, by, position, dict(spec))


def apply_rules(hits: list[dict], rules: list[Rule], query: str, pinned: dict | None = None) -> list[dict]:
    """``hits`` (a ranking, best first) reordered by the ``rules`` that apply to ``query``; each
    moved hit gets ``rules``: the names of the rules that moved it. ``pinned``: products a pin by id
    names that the ranking did not retrieve, {id: hit} (fetched by the caller; absent ids are skipped)."""
    active = [r for r in rules if r.applies_to(query)]
    if not active:
        return hits
    ranked = [dict(h) for h in hits]
    for rule in (r for r in active if r.action == "bury"):
        buried = [h for h in ranked if rule.targets(h)]
        for h in buried:
            h.setdefault("rules", []).append(rule.describe())
        ranked = [h for h in ranked if not rule.targets(h)] + buried
    for rule in (r for r in active if r.action == "boost"):
        for i in [i for i, h in enumerate(ranked) if rule.targets(h)]:
            hit = ranked.pop(i)
            hit.setdefault("rules", []).append(rule.describe())
            ranked.insert(max(0, i - rule.by), hit)
    placed = []  # every pinned product is taken out first, then put back by ascending position,
    for rule in sorted((r for r in active if r.action == "pin"), key=lambda r: r.position):  # so no pin
        at = next((i for i, h in enumerate(ranked) if rule.targets(h)), None)  # shifts another
        if at is not None:
            hit = ranked.pop(at)
        else:
            hit = next((dict(pinned[p]) for p in rule.ids if pinned and p in pinned
                        and p not in {h["id"] for _, h in placed}), None)
            if hit is None:
                continue
        hit.setdefault("rules", []).append(rule.describe())
        placed.append((rule.position, hit))
    for position, hit in placed:
        ranked.insert(min(position - 1, len(ranked)), hit)
    return ranked


def pinned_ids(rules: list[Rule], query: str) -> list[str]:
    """The ids that pins applying to ``query`` name: the caller fetches those the ranking lacks."""
    return list(dict.fromkeys(p for r in rules if r.action == "pin" and r.ids and r.applies_to(query) for p in r.ids))
