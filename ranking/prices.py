"""Price bounds read from a shopper's words, in English and Chinese.

    "under $80", "less than 80 dollars", "$1,299 or less"           -> price <= X
    "over $50", "at least 50 bucks", "300元以上", "超过300块"         -> price >= X
    "between $20 and $40", "$20-$40", "200到300元", "200-300块"      -> X <= price <= Y
    "300元以内", "300以下", "不超过300元", "预算三百"                  -> price <= X
    "about $300", "300元左右", "大概300块"                            -> about X (a soft band)

A bound needs a bound word (under, 以内, 不超过 ...) or, for a range, a currency on one side: "2-4"
alone is a size, not a price. A number followed by a unit ("under 5 lbs", "5米以内", "3天内") is not
a price. Currencies are read as words only: the number is taken in the catalogue's own currency.

Numbers may carry thousands separators, decimals, "k" ("1.5k") or be Chinese numerals ("三百",
"两千五"). A number of more than 12 digits is not read (no shop prices a product at 10^12).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_DIGITS = 12
_CN_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_CN_UNITS = {"十": 10, "百": 100, "千": 1000, "万": 10000}

NUMBER = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?k?|[零〇一二两三四五六七八九十百千万]*[十百千万][零〇一二两三四五六七八九]?"
PRE = r"(?:us\s?\$|\$|¥|￥|€|£|rmb\s?|cny\s?|usd\s?)"
POST = r"(?:\s?(?:dollars?|bucks|usd|yuan|rmb|cny|euros?)\b|元|块钱|块|人民币|美元|美金|€)"
# what a number may be followed by when it is a quantity, not a price
UNITS = (r"(?:\s?(?:lbs?|pounds?|oz|ft|feet|foot|in\b|inch|inches|\"|'|gal|gallons?|qt|v\b|volts?|w\b|watts?|amps?|"
         r"mm|cm|m\b|meters?|kg|g\b|ml|l\b|liters?|pack|pk|pcs|pieces?|btu|hp|psi|years?|days?|hours?|mins?|x\b|%|"
         r"sq|cu|mph|gb|tb)|米|厘米|毫米|斤|公斤|克|千克|寸|英寸|天|小时|分钟|人|个|件|岁|度|瓦|升|毫升|月|年|号|码|层|平|匹|斤)")
MONEY = rf"(?P<pre{{n}}>{PRE})?\s?(?P<num{{n}}>{NUMBER})(?P<post{{n}}>{POST})?"


def _money(n: int) -> str:
    return MONEY.replace("{n}", str(n))


@dataclass(frozen=True)
class PriceBound:
    op: str  # lte, gte, between, about
    value: object  # a number; between: (low, high)
    start: int
    end: int
    currency: bool  # a currency word or sign was seen: more certain than a bare number


def _cn_number(text: str) -> float | None:
    total, section, digit = 0, 0, None
    for i, ch in enumerate(text):
        if ch in _CN_DIGITS:
            digit = _CN_DIGITS[ch]
        elif ch in _CN_UNITS:
            unit = _CN_UNITS[ch]
            if unit == 10000:
                total += (section + (digit or 0)) * unit
                section, digit = 0, None
            else:
                section += (1 if digit is None else digit) * unit
                digit = None
                if i == len(text) - 2 and text[-1] in _CN_DIGITS and unit >= 100:  # 两百五 = 250
                    return float(total + section + _CN_DIGITS[text[-1]] * unit // 10)
        else:
            return None
    return float(total + section + (digit or 0))


def read_number(text: str) -> float | None:
    """A number as a shopper writes it, or None when it is not one or is absurdly long."""
    text = text.strip()
    if not text:
        return None
    if text[0].isdigit():
        scale = 1000 if text.endswith("k") else 1
        digits = text.rstrip("k").replace(",", "")
        if len(digits.split(".")[0]) > MAX_DIGITS:
            return None
        return float(digits) * scale
    return _cn_number(text)


def _pattern(template: str) -> re.Pattern:
    return re.compile(template.replace("{M1}", _money(1)).replace("{M2}", _money(2)), re.IGNORECASE)


_NOT_UNIT = rf"(?!{UNITS})"
# (op, pattern, needs a currency), tried in this order; each match claims its span. Weak cue words
# ("max", "up to", "about") want a currency as well: "toro power max 726" names a model.
PATTERNS = [
    ("between", _pattern(r"\b(?:between|from)\s+{M1}\s*(?:and|to|-|–)\s*{M2}" + _NOT_UNIT), False),
    ("between", _pattern(r"在\s?{M1}\s*(?:-|–|~|到|至)\s*{M2}\s?之间"), False),
    ("between", _pattern(r"(?:在\s?)?{M1}\s*(?:-|–|~|到|至)\s*{M2}(?:\s?之间)?" + _NOT_UNIT), True),
    ("lte", _pattern(r"\b(?:under|below|less\s+than|cheaper\s+than|no\s+more\s+than|not\s+more\s+than|"
                     r"at\s+most)\s*{M1}" + _NOT_UNIT), False),
    ("lte", _pattern(r"(?:<=?|\b(?:up\s+to|max(?:imum)?|within|budget(?:\s+of)?))\s*{M1}" + _NOT_UNIT), True),
    ("lte", _pattern(r"(?:不要超过|不超过|不高于|低于|少于|最多|预算|不到|控制在)\s?{M1}" + _NOT_UNIT), False),
    ("lte", _pattern(r"{M1}\s?(?:以内|以下|之内|之下)"), False),
    ("lte", _pattern(r"{M1}\s?内"), True),  # "3天内" is not a price, "300元内" is
    ("lte", _pattern(r"{M1}\s+(?:or\s+less|or\s+under|and\s+under|or\s+below)\b"), False),
    ("gte", _pattern(r"\b(?:over|above|more\s+than|at\s+least)\s*{M1}" + _NOT_UNIT), False),
    ("gte", _pattern(r"(?:>=?|\b(?:min(?:imum)?|starting\s+at|from))\s*{M1}" + _NOT_UNIT), True),
    ("gte", _pattern(r"(?:超过|高于|不低于|至少|起码)\s?{M1}" + _NOT_UNIT), False),
    ("gte", _pattern(r"{M1}\s?(?:以上|起)"), False),
    ("about", _pattern(r"\b(?:about|around|approximately|approx\.?|roughly)\s*{M1}" + _NOT_UNIT), True),
    ("about", _pattern(r"(?:~|大概|大约|差不多)\s*{M1}" + _NOT_UNIT), False),
    ("about", _pattern(r"{M1}\s?(?:左右|上下)"), False),
]


# a run of digits (or Chinese numerals) too long to be a price; masked before matching, because the
# patterns would otherwise try it from every position (10,000 digits: seconds)
TOO_LONG = re.compile(r"[\d,.]{16,}|[零〇一二两三四五六七八九十百千万]{13,}")


def read_prices(text: str) -> list[PriceBound]:
    """Every price bound in ``text`` (lower-cased, normalised), left to right, spans not overlapping."""
    text = TOO_LONG.sub(lambda m: "#" * len(m.group(0)), text)  # same length: spans still index the text
    found = []
    for op, pattern, needs_currency in PATTERNS:
        for m in pattern.finditer(text):
            start = m.start()
            while text[start].isspace():  # the money pattern may begin at the space before a number
                start += 1
            if any(start < b.end and b.start < m.end() for b in found):
                continue
            bound = _bound(op, m, start)
            if bound is not None and (bound.currency or not needs_currency):
                found.append(bound)
    return sorted(found, key=lambda b: b.start)


def _bound(op: str, m: re.Match, start: int) -> PriceBound | None:
    names = m.groupdict()
    first = read_number(names["num1"])
    currency = bool(names.get("pre1") or names.get("post1") or names.get("pre2") or names.get("post2"))
    if first is None:
        return None
    if not names["num1"][0].isdigit() and not currency and op != "lte" and op != "gte":
        return None  # a Chinese numeral range or band wants a currency: "一两百" is not a price
    if op == "between":
        second = read_number(names["num2"])
        if second is None:
            return None
        low, high = sorted((first, second))
        return PriceBound(op, (low, high), start, m.end(), currency)
    return PriceBound(op, first, start, m.end(), currency)
