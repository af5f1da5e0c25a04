"""Typed product attributes: the fields filters and facets work on (price, brand, in_stock, tags).

A catalogue column becomes a typed field by being named in ``attributes`` (prepare's setting, or a
dataset's spec) as ``NAME`` or ``NAME:TYPE``:

- ``number``: price, rating (stored as float64; "$1,299.00", "¥299" and "299元" read as numbers);
- ``keyword``: category, brand, colour (one string, matched exactly);
- ``boolean``: in_stock ("true/false", "yes/no", "1/0", "有/无", "是/否");
- ``keywords``: tags (several strings, separated by "|").

A field without a type is inferred from its values and the choice is reported (prepare's log and
manifest), so a surprise ("rating" read as keyword because one row says "n/a") is seen at once.
Values that do not read as the field's type are left empty and counted, never guessed.

The catalogue stores each field as its own Parquet column beside product_id, title and text; the
prepare manifest lists them (``attributes``: [{name, type}]), which is how every later stage (the
server's filters, facets, ``POST /v1/items``) learns the catalogue's schema.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import pyarrow as pa

from common.errors import ConfigError
from common.text import normalize_text

TYPES = ("number", "keyword", "boolean", "keywords")
#: names a typed field may not take: the catalogue's own columns
RESERVED = ("product_id", "title", "text")
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
ARROW_TYPES = {"number": pa.float64(), "keyword": pa.string(), "boolean": pa.bool_(),
               "keywords": pa.list_(pa.string())}
TRUE = frozenset({"true", "yes", "y", "t", "1", "有", "是", "有货", "in stock"})
FALSE = frozenset({"false", "no", "n", "f", "0", "无", "否", "缺货", "out of stock"})
LIST_SEPARATOR = "|"
_CURRENCY = re.compile(r"^\s*(?:[$€£¥￥]|usd|eur|gbp|cny|rmb)?\s*|\s*(?:元|块|usd|eur|gbp|cny|rmb)?\s*$",
                       re.IGNORECASE)


@dataclass(frozen=True)
class AttributeField:
    """One typed field: its name in filters, its type, and the catalogue column it is read from."""

    name: str
    type: str | None = None  # None: inferred from the values
    column: str | None = None  # default: the name

    @property
    def source(self) -> str:
        return self.column or self.name

    def as_dict(self) -> dict:
        return {"name": self.name, "type": self.type}


def parse_fields(specs) -> tuple[AttributeField, ...]:
    """``["price:number", "brand", "colour=color_name:keyword"]`` as fields; ``NAME=COLUMN`` reads the
    field from a differently named column. Raises ConfigError naming the entry and the fix."""
    fields = []
    for raw in specs or ():
        if isinstance(raw, AttributeField):
            fields.append(raw)
            continue
        entry = str(raw).strip()
        left, _, kind = entry.partition(":")
        name, _, column = left.partition("=")
        name, column, kind = name.strip(), column.strip() or None, kind.strip() or None
        if not NAME.match(name) or name in RESERVED:
            raise ConfigError("attributes", f"{entry!r}: {name!r} is not a usable field name",
                              "use letters, digits and _ (not starting with a digit), and none of "
                              f"{', '.join(RESERVED)}")
        if kind is not None and kind not in TYPES:
            raise ConfigError("attributes", f"{entry!r}: unknown type {kind!r}", f"use one of {', '.join(TYPES)}")
        fields.append(AttributeField(name, kind, column))
    names = [f.name for f in fields]
    if len(set(names)) != len(names):
        raise ConfigError("attributes", f"a field is named twice in {names}", "name each field once")
    return tuple(fields)


# -- reading one value -------------------------------------------------------------------------
def read_number(value) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    text = _CURRENCY.sub("", normalize_text(value)).replace(",", "")
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def read_boolean(value) -> bool | None:
    if isinstance(value, bool):
        return value
    text = normalize_text(value).lower()
    return True if text in TRUE else False if text in FALSE else None


def read_keyword(value) -> str | None:
    text = normalize_text(value)
    return text or None


def read_keywords(value) -> list[str] | None:
    if isinstance(value, (list, tuple)):
        parts = [normalize_text(v) for v in value]
    else:
        parts = [normalize_text(v) for v in normalize_text(value).split(LIST_SEPARATOR)]
    parts = list(dict.fromkeys(p for p in parts if p))
    return parts or None


READERS = {"number": read_number, "keyword": read_keyword, "boolean": read_boolean, "keywords": read_keywords}


def read_value(kind: str, value):
    """``value`` as a field of type ``kind``, or None when it is empty or does not read as one."""
    return READERS[kind](value)


# -- inference ---------------------------------------------------------------------------------
def infer_type(values: list) -> str:
    """The narrowest type every non-empty value reads as: boolean, number, keywords (a "|" in some
    value), else keyword."""
    filled = [v for v in values if normalize_text(v)]
    if not filled:
        return "keyword"
    if all(normalize_text(v).lower() in (TRUE | FALSE) - {"1", "0"} for v in filled):
        return "boolean"
    if all(read_number(v) is not None for v in filled):
        return "number"
    if any(LIST_SEPARATOR in str(v) for v in filled):
        return "keywords"
    return "keyword"


@dataclass
class FieldReport:
    """What reading one field found: printed by prepare and kept in its manifest."""

    name: str
    type: str
    inferred: bool
    filled: int
    rows: int
    unreadable: int
    examples: list
    distinct: int

    def line(self) -> str:
        how = "inferred" if self.inferred else "declared"
        bad = (f"; {self.unreadable} value(s) not read as {self.type} were left empty "
               f"(e.g. {', '.join(repr(e) for e in self.examples[:3])})" if self.unreadable else "")
        return (f"{self.name}: {self.type} ({how}), filled in {self.filled:,} of {self.rows:,} products, "
                f"{self.distinct:,} distinct value(s){bad}")

    def as_dict(self) -> dict:
        return {"name": self.name, "type": self.type, "inferred": self.inferred, "filled": self.filled,
                "rows": self.rows, "unreadable": self.unreadable, "examples": self.examples[:5],
                "distinct": self.distinct}


def resolve(fields: tuple[AttributeField, ...], columns: dict[str, list]) -> tuple[tuple[AttributeField, ...],
                                                                                  list[FieldReport]]:
    """Fields with their types fixed (declared or inferred from ``columns``: source column -> raw
    values) and a report per field."""
    resolved, reports = [], []
    for f in fields:
        raw = columns[f.source]
        kind = f.type or infer_type(raw)
        values = [read_value(kind, v) for v in raw]
        unreadable = [r for r, v in zip(raw, values) if v is None and normalize_text(r)]
        distinct = set()
        for v in values:
            if v is not None:
                distinct.update(v if isinstance(v, list) else [v])
        resolved.append(AttributeField(f.name, kind, f.column))
        reports.append(FieldReport(f.name, kind, f.type is None, sum(v is not None for v in values), len(raw),
                                   len(unreadable), [str(u)[:40] for u in unreadable[:5]], len(distinct)))
    return tuple(resolved), reports


def typed_columns(fields: tuple[AttributeField, ...], columns: dict[str, list]) -> dict[str, pa.Array]:
    """The fields' values as typed Arrow arrays, named by field (types must be resolved)."""
    return {f.name: pa.array([read_value(f.type, v) for v in columns[f.source]], type=ARROW_TYPES[f.type])
            for f in fields}


def schema_of(fields) -> dict[str, str]:
    """{name: type}, what filters check against (from fields or a manifest's list of dicts)."""
    return {(f["name"] if isinstance(f, dict) else f.name): (f["type"] if isinstance(f, dict) else f.type)
            for f in fields}
