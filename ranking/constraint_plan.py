"""What becomes of the constraints read from a shopper's words (ranking/constraints.py).

- **Hard** (a price bound, stock, a value of a ``hard_fields`` attribute such as a brand, a
  negation): a filter, applied by the first stage like a request's ``filter``; a negated word no
  attribute holds ("not corded") removes the products whose text has it.
- **Soft** (a colour, a category, a season, "about 300"): a boost. After the reranker, a product
  moves up ``soft_boost`` places for meeting every soft constraint (in proportion for some).
- **Relaxed**: when the hard constraints leave fewer than ``k`` products, the least certain one
  (ranking.constraints.CERTAINTY; the later in the text on a tie) is dropped and the ranking run again,
  until ``k`` are found or none is left. The reply says which were relaxed.
- **Ignored**: the catalogue has no such attribute (a price bound over a catalogue without prices),
  or the request's own ``filter`` sets that field ("overridden"): an explicit filter always wins.

A plan is a frozen value: the server's gateway builds it and the ranking path relaxes it, and
`firstlight evaluate` runs the same functions.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ranking.constraints import Constraint, ConstraintReading
from ranking.filters import (
    Combined,
    Condition,
    Filter,
    FilterError,
    matches,
    parse_filter,
)

APPLIED, RELAXED, IGNORED, OVERRIDDEN = "applied", "relaxed", "ignored", "overridden"


@dataclass(frozen=True)
class Planned:
    constraint: Constraint
    status: str
    reason: str | None = None
    test: Filter | None = None  # what a product meets it by (None for a text exclusion)


@dataclass(frozen=True)
class ConstraintPlan:
    items: tuple  # of Planned, in text order
    explicit: Filter | None = None  # the request's own filter, never relaxed

    def filter(self) -> Filter | None:
        """The request's filter and every applied hard constraint's, together; two values named for
        one field are either ("makita or dewalt drill")."""
        parts, named = [], {}
        for p in self.items:
            if p.status != APPLIED or not p.constraint.hard or p.test is None:
                continue
            if p.constraint.op == "eq" and p.constraint.values:
                named.setdefault(p.constraint.field, []).append(p.test)
            else:
                parts.append(p.test)
        for tests in named.values():
            parts.append(tests[0] if len(tests) == 1 else Combined("or", tuple(tests)))
        if self.explicit is not None:
            parts.insert(0, self.explicit)
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else Combined("and", tuple(parts))

    def relaxable(self) -> bool:
        return any(p.status == APPLIED and p.constraint.hard for p in self.items)

    def relaxed(self) -> "ConstraintPlan":
        """This plan with its least certain applied hard constraint relaxed."""
        hard = [(p.constraint.certainty, -i) for i, p in enumerate(self.items)
                if p.status == APPLIED and p.constraint.hard]
        _, at = min(hard)
        items = list(self.items)
        items[-at] = replace(items[-at], status=RELAXED, reason="fewer than k products met every constraint; "
                             "this one, the least certain, was dropped")
        return replace(self, items=tuple(items))

    def exclusions(self) -> list[str]:
        return [p.constraint.value for p in self.items
                if p.status == APPLIED and p.constraint.op == "not_contains"]

    def soft(self) -> list[Planned]:
        return [p for p in self.items if p.status == APPLIED and not p.constraint.hard]

    def public(self) -> list[dict]:
        return [p.constraint.public(p.status, p.reason) for p in self.items]

    def satisfied(self, hit: dict) -> list[str]:
        """The applied constraints a returned product meets, in words (for its ``why``)."""
        attributes = hit.get("attributes") or {}
        return [p.constraint.describe() for p in self.items if p.status == APPLIED and p.test is not None
                and matches(p.test, attributes)]


def plan(constraints: list[Constraint], schema: dict[str, str], settings: ConstraintReading,
         explicit: Filter | None = None) -> ConstraintPlan:
    """Each constraint's fate before any search: applied, ignored (no such attribute, or one it cannot
    be read as) or overridden by the request's own filter."""
    overridden = fields_of(explicit) if explicit is not None else set()
    items = []
    for c in constraints:
        if c.field == "text":
            items.append(Planned(c, APPLIED))
            continue
        if c.field not in schema:
            items.append(Planned(c, IGNORED, f"the catalogue has no '{c.field}' attribute"))
            continue
        if c.field in overridden:
            items.append(Planned(c, OVERRIDDEN, f"the request's filter sets '{c.field}'"))
            continue
        try:
            test = parse_filter(c.expression(settings.about_band), schema)
        except FilterError as err:
            items.append(Planned(c, IGNORED, f"cannot be applied to '{c.field}': {err.message}"))
            continue
        items.append(Planned(c, APPLIED, None, test))
    return ConstraintPlan(tuple(items), explicit)


def relax_short(plans: list[ConstraintPlan], todo: list[int], found: list[int], k: int) -> list[int]:
    """The queries of ``todo`` (``found`` products each) left with fewer than ``k`` that still have a
    hard constraint to relax: relaxed in ``plans``, and returned to be searched again. The server's
    ranking path and ``OfflineRanker.sides_within`` both stop on this."""
    short = [i for i, n in zip(todo, found) if n < k and plans[i].relaxable()]
    for i in short:
        plans[i] = plans[i].relaxed()
    return short


def fields_of(expr: Filter) -> set[str]:
    if isinstance(expr, Condition):
        return {expr.field}
    return set().union(*(fields_of(p) for p in expr.parts))


def without_excluded(hits: list[dict], words: list[str], tokenizer) -> list[dict]:
    """``hits`` less the products whose text holds an excluded word (compared as BM25 compares words:
    "corded" excludes "Corded", not "Cordless"; a Chinese word as characters in sequence)."""
    if not words:
        return hits
    tests = []
    for word in words:
        tokens = tokenizer(word)
        tests.append((word, set(tokens) if tokens and word.isascii() else None))
    kept = []
    for hit in hits:
        text = hit.get("text") or hit.get("title") or ""
        product = None
        for word, tokens in tests:
            if tokens is None:
                if word in text.lower():
                    break
            else:
                product = product if product is not None else set(tokenizer(text))
                if tokens <= product:
                    break
        else:
            kept.append(hit)
    return kept


def boosted(hits: list[dict], plan: ConstraintPlan, places: int) -> list[dict]:
    """Each product moved up ``places`` x the share of the soft constraints it meets (stable)."""
    soft = plan.soft()
    if not soft or places <= 0:
        return hits
    keyed = []
    for rank, hit in enumerate(hits):
        attributes = hit.get("attributes") or {}
        met = sum(matches(p.test, attributes) for p in soft) / len(soft)
        keyed.append((rank - places * met - 1e-9 * met, rank, hit))
    return [hit for _, _, hit in sorted(keyed, key=lambda t: (t[0], t[1]))]
