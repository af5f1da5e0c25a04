"""Constraints read from what a shopper typed: "我需要一件适合春游的外套，300元以内" asks for outerwear,
for spring, at most 300.

The reader is deterministic: a grammar for prices (ranking/prices.py), cue phrases for stock and
negation, and the catalogue's own vocabulary for brands, categories, colours and seasons
(ranking/vocabulary.py). Each constraint keeps the span of text it came from, so the reply can show
it and a page can offer to remove it. What becomes of each (a filter, a boost, relaxed, ignored) is
ranking/constraint_plan.py's part.

    price    lte / gte / between / about   "under $80", "300元以内", "200到300元", "300元左右"
    <field>  eq                            "Makita", "蓝色连衣裙" (colour, category), "春游" (season);
                                           not "华为手机壳", "paint for cub cadet": a brand an
                                           accessory fits is not its maker
    <field>  not                           "not Makita", "不要黑色"
    in_stock eq true                       "in stock", "有货", "现货"
    text     not_contains                  "not corded", "不要皮的": a word no attribute holds
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from common.config import Listed, check_range, listed
from common.text import normalize_text
from data_pipeline.prepare import catalogue_schema, load_catalogue
from ranking.prices import read_prices
from ranking.tokens import CJK_CHARS
from ranking.vocabulary import Term, Vocabulary, latin_words, lower


@dataclass
class ConstraintReading:
    """How shoppers' words become constraints: one component shared by serve and evaluate."""

    read: bool = field(default=True, metadata={
        "help": "read prices, brands, categories, colours, seasons, stock and negations from the text and apply "
                "them (a request may turn it off with read_constraints: false)"})
    price_field: str = field(default="price", metadata={"help": "the number attribute price bounds apply to"})
    stock_field: str = field(default="in_stock", metadata={"help": "the boolean attribute 'in stock' / '有货' sets"})
    hard_fields: Listed = field(default=("brand",), metadata={
        "help": "keyword attributes whose named values become filters; the others' (colour, category, season) "
                "become boosts. Price bounds and stock are always filters, 'about X' a boost"})
    soft_boost: int = field(default=10, metadata={
        "help": "places a product moves up for meeting every soft constraint (a colour, 'about 300', a season), "
                "in proportion for some"})
    about_band: float = field(default=0.15, metadata={"help": "'about X' boosts prices within X +/- this share"})

    def __post_init__(self):
        self.hard_fields = listed(self.hard_fields)

    def validate(self, prefix: str = "") -> None:
        check_range(prefix + "soft_boost", self.soft_boost, 0, 1000)
        check_range(prefix + "about_band", self.about_band, 0.0, 1.0)


#: constraints read from one text at most (in text order): a text of 300 price bounds is not a request,
#: and each hard constraint may cost one more search when it is relaxed
MAX_CONSTRAINTS = 8
# how sure the reader is of each kind: the least sure hard constraint is relaxed first
CERTAINTY = {"stock": 0.95, "price": 0.9, "bare_price": 0.7, "term": 0.8, "not": 0.7, "text": 0.6}
SIGNS = {"lte": "≤", "gte": "≥"}


@dataclass(frozen=True)
class Constraint:
    field: str  # an attribute name, or "text" for a word to exclude
    op: str  # lte, gte, between, about, eq, not, not_contains
    value: object  # a number; between: [low, high]; a term's name; not_contains: the word
    span: tuple  # (start, end) in the text as read (normalised)
    text: str  # the words of the span
    hard: bool
    certainty: float
    values: tuple = ()  # the catalogue values a term stands for

    def key(self) -> tuple:
        """(field, op, value): what a labelled constraint is compared on."""
        value = tuple(self.value) if isinstance(self.value, (list, tuple)) else self.value
        return self.field, self.op, value.lower() if isinstance(value, str) else value

    def describe(self) -> str:
        if self.op in SIGNS:
            return f"{self.field} {SIGNS[self.op]} {self.value:g}"
        if self.op == "between":
            return f"{self.field} {self.value[0]:g}-{self.value[1]:g}"
        if self.op == "about":
            return f"{self.field} about {self.value:g}"
        if self.op == "not_contains":
            return f"without '{self.value}'"
        if self.op == "not":
            return f"{self.field} not {self.value}"
        return self.field if self.value is True else f"{self.field} = {self.value}"

    def expression(self, about_band: float = 0.15) -> dict | None:
        """The filter expression (ranking/filters.py) a product meets this constraint by; None for
        not_contains, which is a word test on the product's text."""
        if self.op in ("lte", "gte"):
            return {"field": self.field, "range": {self.op: self.value}}
        if self.op == "between":
            return {"field": self.field, "range": {"gte": self.value[0], "lte": self.value[1]}}
        if self.op == "about":
            return {"field": self.field, "range": {"gte": self.value * (1 - about_band),
                                                   "lte": self.value * (1 + about_band)}}
        if self.op == "eq" and isinstance(self.value, bool):
            return {"field": self.field, "eq": self.value}
        if self.op == "eq":
            return {"field": self.field, "in": list(self.values)}
        if self.op == "not":
            return {"not": {"field": self.field, "in": list(self.values)}}
        return None

    def public(self, status: str, reason: str | None = None) -> dict:
        """As the reply shows it."""
        value = list(self.value) if isinstance(self.value, tuple) else self.value
        out = {"field": self.field, "op": self.op, "value": value, "span": list(self.span), "text": self.text,
               "kind": "hard" if self.hard else "soft", "status": status, "read_as": self.describe()}
        if reason:
            out["reason"] = reason
        return out


STOCK = re.compile(r"\b(?:in[\s-]stock|available\s+now|available\s+today)\b|有货|现货|有库存")
NEGATION = re.compile(r"\b(?:not|without|except|excluding|but\s+not|other\s+than)\s+(?:a\s+|an\s+|the\s+|any\s+)?"
                      r"|不要|不含|不是|除了|不想要")
CJK_WORD = re.compile(f"[{CJK_CHARS}]{{1,4}}?(?=的|[^{CJK_CHARS}]|$)|[{CJK_CHARS}]{{1,4}}")
# a brand followed by a device and an accessory names what the accessory fits, not its maker:
# "华为手机壳", "苹果手机充电器", "apple watch band"
FOR_DEVICE = re.compile(r"[\s\w.-]{0,12}?(?:手机|phone|平板|ipad|watch|电脑|笔记本|laptop)\s?"
                        r"(?:壳|套|膜|充电|数据线|支架|表带|case|cover|charger|cable|band|protector|stand|screen)")
# "paint for cub cadet", "适用华为": the brand is what the product fits, not who made it
FOR_BRAND = re.compile(r"(?:\bfor|\bfits?|compatible\s+with|适用于?|兼容)\s*$")
NOT_A_WORD = {"too", "very", "so", "more", "less", "that", "this", "for", "sure", "only", "just", "really"}
# "不要太贵", "不是很大": a negated degree ("not too expensive") excludes nothing
NOT_A_CJK_WORD = ("太", "很", "那么", "特别", "非常", "超过", "要")


class ConstraintReader:
    """Text -> constraints, over one catalogue's vocabulary (None: prices, stock and negated words
    only) and its schema ({name: type}; price and stock are read only when their fields exist, but
    kept either way so the reply can say they were ignored)."""

    def __init__(self, settings: ConstraintReading, schema: dict[str, str], vocabulary: Vocabulary | None = None):
        self.settings, self.schema, self.vocabulary = settings, schema, vocabulary

    @classmethod
    def for_catalogue(cls, settings: ConstraintReading, prepared: Path) -> "ConstraintReader":
        """The reader of a prepared catalogue: its schema, and the vocabulary of its keyword attributes
        (hard fields first, so a word that names a brand and a colour is read as the brand)."""
        schema = catalogue_schema(prepared)
        fields = [f for f in settings.hard_fields if f in schema] + [f for f in schema if f not in settings.hard_fields]
        keyword = [f for f in fields if schema[f] in ("keyword", "keywords")]
        frame = load_catalogue(prepared, columns=["title", *keyword]) if keyword else None
        return cls(settings, schema, Vocabulary(schema, frame, keyword) if keyword else None)

    def read(self, text: str) -> list[Constraint]:
        """The constraints in ``text``, in text order; spans index the text as normalise_text leaves it."""
        shown = normalize_text(text)
        text = lower(shown)  # same offsets: spans index both
        found: list[Constraint] = []
        taken: list[tuple[int, int]] = []
        s = self.settings
        for bound in read_prices(text):
            value = list(bound.value) if bound.op == "between" else bound.value
            span = (bound.start, bound.end)
            found.append(Constraint(s.price_field, bound.op, value, span, shown[span[0]:span[1]], bound.op != "about",
                                    CERTAINTY["price" if bound.currency else "bare_price"]))
            taken.append(span)
        for m in STOCK.finditer(text):
            if not _overlaps(m.span(), taken):
                found.append(Constraint(s.stock_field, "eq", True, m.span(), shown[m.start():m.end()], True, CERTAINTY["stock"]))
                taken.append(m.span())
        terms = self.vocabulary.find(text, taken) if self.vocabulary is not None else []
        negated_terms = set()
        for m in NEGATION.finditer(text):
            if _overlaps(m.span(), taken):
                continue
            after = m.end()
            term = next(((a, b, t) for a, b, t in terms if a == after), None)
            if term is not None:
                negated_terms.add(term)
                a, b, t = term
                found.append(Constraint(t.field, "not", t.name, (m.start(), b), shown[m.start():b], True,
                                        CERTAINTY["not"], t.values))
                taken.append((m.start(), b))
                continue
            word = self._negated_word(text, after)
            if word is not None and not _overlaps((m.start(), word[1]), taken):
                found.append(Constraint("text", "not_contains", text[word[0]:word[1]], (m.start(), word[1]),
                                        shown[m.start():word[1]], True, CERTAINTY["text"]))
                taken.append((m.start(), word[1]))
        for a, b, t in terms:
            if (a, b, t) in negated_terms or _overlaps((a, b), taken):
                continue
            if t.field in s.hard_fields and (FOR_DEVICE.match(text, b) or FOR_BRAND.search(text, 0, a)):
                continue
            found.append(_term_constraint(t, (a, b), shown[a:b], t.field in s.hard_fields))
        return sorted(found, key=lambda c: c.span)[:MAX_CONSTRAINTS]

    @staticmethod
    def _negated_word(text: str, at: int) -> tuple[int, int] | None:
        """The word a negation cue is followed by: one Latin word, or up to four Chinese characters."""
        rest = text[at:]
        cjk = CJK_WORD.match(rest)
        if cjk:
            return None if cjk.group(0).startswith(NOT_A_CJK_WORD) else (at + cjk.start(), at + cjk.end())
        words = latin_words(rest)
        if words and words[0][1] == 0 and len(words[0][0]) >= 2 and words[0][0] not in NOT_A_WORD \
                and not words[0][0].isdigit():
            return at, at + words[0][2]
        return None


def _term_constraint(term: Term, span: tuple, text: str, hard: bool) -> Constraint:
    return Constraint(term.field, "eq", term.name, span, text, hard, CERTAINTY["term"], term.values)


def _overlaps(span: tuple, taken: list) -> bool:
    return any(span[0] < b and a < span[1] for a, b in taken)
