"""Filter expressions over the catalogue's typed attributes, and the table they are evaluated on.

A filter is JSON, the same in the HTTP API, ``firstlight evaluate --filter`` and the tests::

    {"field": "brand", "eq": "Makita"}                    equals (a keywords field: holds it)
    {"field": "colour", "in": ["red", "blue"]}            any of (a keywords field: holds any)
    {"field": "price", "range": {"gte": 10, "lt": 50}}    numbers only: gt / gte / lt / lte, at least one
    {"field": "in_stock", "exists": true}                 has a value (false: has none)
    {"and": [...]}, {"or": [...]}, {"not": {...}}         combined

``parse_filter`` checks an expression against the catalogue's schema ({name: type}, from the prepare
manifest) and the limits below, and raises :class:`FilterError` naming the part at fault (for
example ``and.1.field``) and the fix; what it returns is a small tree of frozen dataclasses that
crosses Ray handles as it is. ``AttributeTable.mask`` evaluates it over every saved product at once
(numpy, one boolean per row); ``matches`` evaluates it on one product's attributes (a product added
through the API), with the same meaning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

#: boolean nesting: {"and": [{"or": [{"not": {...}}]}]} is depth 3
MAX_DEPTH = 4
#: conditions (field tests) in one expression
MAX_CONDITIONS = 32
#: values in one "in" list
MAX_VALUES = 256
MAX_VALUE_CHARS = 200
RANGE_KEYS = ("gt", "gte", "lt", "lte")
OPERATORS = ("eq", "in", "range", "exists")
SHAPE = ('a filter is {"field": NAME, OP: VALUE} with OP one of eq, in, range, exists; or {"and": [...]}, '
         '{"or": [...]} or {"not": {...}}')


class FilterError(ValueError):
    """A filter that cannot be used: ``path`` names the part ("and.0.field"), ``code`` the reason."""

    def __init__(self, path: str, code: str, message: str, limit: int | None = None):
        super().__init__(message)
        self.path, self.code, self.message, self.limit = path, code, message, limit


@dataclass(frozen=True)
class Condition:
    field: str
    op: str  # eq, in, range, exists
    values: tuple = ()  # eq: one value; in: the values
    low: float | None = None
    low_inclusive: bool = True
    high: float | None = None
    high_inclusive: bool = True
    exists: bool = True

    def describe(self) -> str:
        if self.op == "range":
            low = f"{self.field} {'>=' if self.low_inclusive else '>'} {self.low:g}" if self.low is not None else ""
            high = f"{self.field} {'<=' if self.high_inclusive else '<'} {self.high:g}" if self.high is not None else ""
            return " and ".join(p for p in (low, high) if p)
        if self.op == "exists":
            return f"{self.field} {'is set' if self.exists else 'is not set'}"
        if self.op == "eq":
            return f"{self.field} = {self.values[0]}"
        return f"{self.field} in ({', '.join(map(str, self.values))})"


@dataclass(frozen=True)
class Combined:
    op: str  # and, or, not
    parts: tuple

    def describe(self) -> str:
        if self.op == "not":
            return f"not ({self.parts[0].describe()})"
        return f" {self.op} ".join(f"({p.describe()})" for p in self.parts)


Filter = Condition | Combined


# -- parsing and checking ---------------------------------------------------------------------
def parse_filter(expr, schema: dict[str, str]) -> Filter:
    """``expr`` (decoded JSON) as a checked filter over ``schema``; raises FilterError."""
    counter = [0]
    return _parse(expr, schema, "", 0, counter)


def _at(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _parse(expr, schema, path, depth, counter) -> Filter:
    if not isinstance(expr, dict):
        raise FilterError(path or "filter", "wrong_type", f"expected an object; {SHAPE}")
    combiners = [k for k in ("and", "or", "not") if k in expr]
    if combiners:
        op = combiners[0]
        if len(expr) != 1:
            raise FilterError(path or "filter", "invalid_filter",
                              f"an '{op}' object holds nothing else (found {sorted(expr)}); {SHAPE}")
        if depth >= MAX_DEPTH:
            raise FilterError(_at(path, op), "too_deep", f"filters nest and / or / not at most {MAX_DEPTH} deep",
                              MAX_DEPTH)
        if op == "not":
            return Combined("not", (_parse(expr["not"], schema, _at(path, "not"), depth + 1, counter),))
        parts = expr[op]
        if not isinstance(parts, list) or not parts:
            raise FilterError(_at(path, op), "wrong_type", f"'{op}' takes a non-empty list of filters")
        return Combined(op, tuple(_parse(p, schema, _at(path, f"{op}.{i}"), depth + 1, counter)
                                  for i, p in enumerate(parts)))
    if "field" not in expr:
        raise FilterError(path or "filter", "invalid_filter", f"no 'field' and no and / or / not; {SHAPE}")
    counter[0] += 1
    if counter[0] > MAX_CONDITIONS:
        raise FilterError(path or "filter", "too_large", f"a filter holds at most {MAX_CONDITIONS} conditions",
                          MAX_CONDITIONS)
    return _condition(expr, schema, path)


def _condition(expr: dict, schema: dict[str, str], path: str) -> Condition:
    name = expr["field"]
    if not isinstance(name, str):
        raise FilterError(_at(path, "field"), "wrong_type", "'field' is the name of an attribute (a string)")
    kind = require_attribute(name, schema, _at(path, "field"))
    ops = [k for k in expr if k != "field"]
    if len(ops) != 1 or ops[0] not in OPERATORS:
        raise FilterError(path or "filter", "invalid_filter", f"a condition on {name!r} takes exactly one of "
                          f"{', '.join(OPERATORS)} (found {', '.join(map(repr, ops)) or 'none'})")
    op = ops[0]
    where = _at(path, op)
    value = expr[op]
    if op == "exists":
        if not isinstance(value, bool):
            raise FilterError(where, "wrong_type", "'exists' takes true or false")
        return Condition(name, "exists", exists=value)
    if op == "range":
        if kind != "number":
            raise FilterError(where, "wrong_type", f"'range' applies to number attributes; {name!r} is a {kind}")
        if not isinstance(value, dict) or not value or set(value) - set(RANGE_KEYS):
            raise FilterError(where, "wrong_type", f"'range' takes an object with some of {', '.join(RANGE_KEYS)}")
        bounds = {k: _number(v, _at(where, k)) for k, v in value.items()}
        if ("gt" in bounds and "gte" in bounds) or ("lt" in bounds and "lte" in bounds):
            raise FilterError(where, "invalid_filter", "give one lower bound (gt or gte) and one upper (lt or lte)")
        low = bounds.get("gte", bounds.get("gt"))
        high = bounds.get("lte", bounds.get("lt"))
        return Condition(name, "range", low=low, low_inclusive="gt" not in bounds, high=high,
                         high_inclusive="lt" not in bounds)
    values = [value] if op == "eq" else value
    if op == "in":
        if not isinstance(value, list) or not value:
            raise FilterError(where, "wrong_type", "'in' takes a non-empty list of values")
        if len(value) > MAX_VALUES:
            raise FilterError(where, "too_large", f"'in' takes at most {MAX_VALUES} values", MAX_VALUES)
    checked = tuple(_value(v, kind, name, where if op == "eq" else f"{where}.{i}") for i, v in enumerate(values))
    return Condition(name, op, values=tuple(dict.fromkeys(checked)))


def require_attribute(name: str, schema: dict[str, str], where: str) -> str:
    """The type of attribute ``name``, or a FilterError at ``where`` listing the catalogue's attributes."""
    if name not in schema:
        known = ", ".join(sorted(schema)) or "none: this catalogue was prepared without typed attributes"
        raise FilterError(where, "unknown_field", f"no attribute {name[:60]!r} in this catalogue "
                          f"(attributes: {known})")
    return schema[name]


def _number(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise FilterError(where, "wrong_type", "a bound is a finite number")
    return float(value)


def _value(value, kind: str, name: str, where: str):
    if kind == "number":
        return _number(value, where)
    if kind == "boolean":
        if not isinstance(value, bool):
            raise FilterError(where, "wrong_type", f"{name!r} is a boolean: compare it with true or false")
        return value
    if not isinstance(value, str):
        raise FilterError(where, "wrong_type", f"{name!r} is a {kind} attribute: compare it with strings")
    if len(value) > MAX_VALUE_CHARS:
        raise FilterError(where, "too_long", f"a value has at most {MAX_VALUE_CHARS} characters", MAX_VALUE_CHARS)
    return value


# -- one product ----------------------------------------------------------------------------
def matches(expr: Filter, attributes: dict) -> bool:
    """Whether a product with these attributes ({name: value}, missing = unset) passes ``expr``."""
    if isinstance(expr, Combined):
        if expr.op == "and":
            return all(matches(p, attributes) for p in expr.parts)
        if expr.op == "or":
            return any(matches(p, attributes) for p in expr.parts)
        return not matches(expr.parts[0], attributes)
    value = attributes.get(expr.field)
    if isinstance(value, float) and math.isnan(value):
        value = None
    if expr.op == "exists":
        return (value is not None and value != []) == expr.exists
    if value is None:
        return False
    if expr.op == "range":
        return _in_range(expr, float(value))
    held = set(value) if isinstance(value, (list, tuple)) else {value}
    return bool(held & set(expr.values))


def _in_range(expr: Condition, value):
    ok = True
    if expr.low is not None:
        ok = ok & ((value >= expr.low) if expr.low_inclusive else (value > expr.low))
    if expr.high is not None:
        ok = ok & ((value <= expr.high) if expr.high_inclusive else (value < expr.high))
    return ok


# -- every saved product at once ----------------------------------------------------------------
class AttributeTable:
    """The saved catalogue's typed attributes as columns, in catalogue row order.

    - number: float64 (NaN = unset); boolean: int8 (1, 0, -1 = unset);
    - keyword: one code per row (-1 = unset) and the value -> code vocabulary;
    - keywords: every (row, code) pair, so "holds any of" is one ``np.isin``.
    """

    @classmethod
    def empty(cls, rows: int) -> "AttributeTable":
        """The table of a catalogue without typed attributes (every filter names an unknown field)."""
        return cls({}, pd.DataFrame(index=range(rows)))

    def __init__(self, schema: dict[str, str], frame: pd.DataFrame):
        self.schema = dict(schema)
        self.rows = len(frame)
        self.columns: dict[str, object] = {}
        self.values: dict[str, list] = {}  # keyword(s) fields: code -> value
        for name, kind in self.schema.items():
            column = frame[name] if name in frame else pd.Series([None] * self.rows)
            if kind == "number":
                self.columns[name] = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
            elif kind == "boolean":
                self.columns[name] = np.array([-1 if v is None or v is pd.NA or (isinstance(v, float) and
                                               math.isnan(v)) else int(bool(v)) for v in column], dtype=np.int8)
            elif kind == "keyword":
                codes, vocab = pd.factorize(column, use_na_sentinel=True)
                self.columns[name] = (codes.astype(np.int32), {v: i for i, v in enumerate(vocab)})
                self.values[name] = list(vocab)
            else:
                rows, values = [], []
                for i, held in enumerate(column):
                    if held is not None and not (isinstance(held, float) and math.isnan(held)):
                        rows.extend([i] * len(held))
                        values.extend(held)
                codes, vocab = pd.factorize(pd.Series(values, dtype=object))
                self.columns[name] = (np.asarray(rows, dtype=np.int64), codes.astype(np.int32),
                                      {v: i for i, v in enumerate(vocab)})
                self.values[name] = list(vocab)

    def value(self, name: str, row: int):
        """One product's value of a field (None when unset): for replies and for ``matches``."""
        kind, column = self.schema[name], self.columns[name]
        if kind == "number":
            return None if math.isnan(column[row]) else float(column[row])
        if kind == "boolean":
            return None if column[row] < 0 else bool(column[row])
        if kind == "keyword":
            return None if column[0][row] < 0 else self.values[name][column[0][row]]
        rows, codes, _ = column  # rows ascend: a product's entries are one slice
        held = codes[np.searchsorted(rows, row, "left"):np.searchsorted(rows, row, "right")]
        return [self.values[name][c] for c in held] or None

    def attributes(self, row: int) -> dict:
        return {name: self.value(name, row) for name in self.schema}

    def mask(self, expr: Filter) -> np.ndarray:
        """One boolean per saved product: whether it passes ``expr``."""
        if isinstance(expr, Combined):
            masks = [self.mask(p) for p in expr.parts]
            if expr.op == "not":
                return ~masks[0]
            return np.logical_and.reduce(masks) if expr.op == "and" else np.logical_or.reduce(masks)
        kind, column = self.schema[expr.field], self.columns[expr.field]
        if kind == "number":
            if expr.op == "exists":
                return ~np.isnan(column) if expr.exists else np.isnan(column)
            with np.errstate(invalid="ignore"):
                if expr.op == "range":
                    return np.asarray(_in_range(expr, column), dtype=bool) & ~np.isnan(column)
                return np.isin(column, np.asarray(expr.values, dtype=np.float64))
        if kind == "boolean":
            if expr.op == "exists":
                return (column >= 0) == expr.exists
            return np.isin(column, [int(v) for v in expr.values])
        if kind == "keyword":
            codes, vocab = column
            if expr.op == "exists":
                return (codes >= 0) == expr.exists
            return np.isin(codes, [vocab[v] for v in expr.values if v in vocab])
        rows, codes, vocab = column
        out = np.zeros(self.rows, dtype=bool)
        if expr.op == "exists":
            out[rows] = True
            return out if expr.exists else ~out
        out[rows[np.isin(codes, [vocab[v] for v in expr.values if v in vocab])]] = True
        return out
