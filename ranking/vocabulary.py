"""The words a shopper may use for a catalogue's attribute values: brands, categories, colours,
seasons, read from the catalogue itself, so a new shop's vocabulary works without code.

- A keyword (or keywords) attribute's values are its terms: "Makita", "优衣库", "蓝色".
- A path-like value ("服装/外套/夹克风衣", "Tools > Power Tools > Drills") gives one term per segment
  below the top level: "外套" stands for every path holding it. Top-level segments ("服装") are
  left out: they cover too much of a catalogue to narrow anything.
- Built-in concepts, the one list kept in code: season and colour words in English and Chinese
  (``CONCEPTS``). A concept whose name is one of a field's values makes all its names terms for
  that value: a catalogue with colour "蓝色" understands "blue" and "蓝色", one with season "春"
  understands "spring", "春天", "春游".
- A Latin-script term stands for the values that extend it too: "BEHR" for "BEHR Premium Plus".
- A Latin-script term also used as an ordinary word is dropped: when fewer than half of the titles
  holding it carry it as the attribute ("Delta" is a brand; "delta" in many titles is not), the
  shopper's word is not read as that attribute either. The same holds in context: a term next to a
  word it mostly forms an ordinary phrase with in titles is not read there ("cabinet crown moulding":
  Crown is a brand, "crown moulding" in titles mostly is not). Chinese terms are kept as they are.
- Words written apart match a one-word value: "traffic master" reads TrafficMASTER.

Terms are matched longest first: whole words for Latin script, substrings for Chinese (no spaces
to go by); a term needs two characters at least.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass

import pandas as pd

from ranking.tokens import CJK_CHARS

# season and colour words: {concept: names}. A concept applies where a field's value is one of its names.
CONCEPTS = {
    "spring": ("spring", "春", "春天", "春季", "春游", "春装", "春款", "春日"),
    "summer": ("summer", "夏", "夏天", "夏季", "夏装", "夏款", "夏日"),
    "autumn": ("autumn", "秋", "秋天", "秋季", "秋装", "秋款"),
    "winter": ("winter", "冬", "冬天", "冬季", "冬装", "冬款", "冬日"),
    "black": ("black", "黑色", "黑"), "white": ("white", "白色", "白"), "blue": ("blue", "蓝色", "蓝"),
    "grey": ("grey", "gray", "灰色", "灰"), "red": ("red", "红色", "红"), "green": ("green", "绿色", "绿"),
    "pink": ("pink", "粉色", "粉红色", "粉"), "yellow": ("yellow", "黄色", "黄"), "khaki": ("khaki", "卡其色", "卡其"),
    "brown": ("brown", "棕色", "咖啡色", "棕"), "purple": ("purple", "紫色", "紫"), "orange": ("orange", "橙色", "橙"),
    "beige": ("beige", "米白色", "米白", "米色"),
}
PATH_SEPARATORS = re.compile(r"\s*(?:/|>|›|\|)\s*")
LATIN_WORD = re.compile(r"[a-z0-9]+(?:['&.-][a-z0-9]+)*")
HAS_CJK = re.compile(f"[{CJK_CHARS}]")
BRAND_SHARE = 0.5  # a Latin term stays when at least this share of the titles holding it carry it
MAX_WORDS = 5
PHRASE_EVIDENCE = 3  # titles a phrase must appear in before it can overrule a term


@dataclass(frozen=True)
class Term:
    field: str
    name: str  # as the reply shows it: the catalogue's value, or the path segment
    values: tuple  # the catalogue values it stands for


def lower(text: str) -> str:
    """Lower case that keeps every character's offset (a few letters lower to two characters)."""
    return "".join(c.lower() if len(c.lower()) == 1 else c for c in text)


def latin_words(text: str) -> list[tuple[str, int, int]]:
    return [(m.group(0), m.start(), m.end()) for m in LATIN_WORD.finditer(text)]


class Vocabulary:
    """Surface forms -> Terms, over the keyword fields of a catalogue. ``frame`` holds the attribute
    columns (and ``title``, for the ordinary-word check); ``fields`` the ones to read, in order of
    preference when one surface names two (the first wins)."""

    def __init__(self, schema: dict[str, str], frame: pd.DataFrame, fields: list[str] | None = None):
        fields = [f for f in (fields or schema) if schema.get(f) in ("keyword", "keywords") and f in frame]
        self.words: dict[tuple, Term] = {}  # Latin: tuple of words
        self.ordinary_phrases: set[tuple] = set()
        self.chars: dict[str, Term] = {}  # Chinese and mixed: the string itself
        titles = frame["title"].astype(str).map(lower).tolist() if "title" in frame else []
        for name in fields:
            for surface, term in self._terms(name, frame[name]).items():
                self._add(surface, term)
        self._widen_to_product_lines()
        self._drop_ordinary_words(frame, titles)
        self.longest_chars = max((len(s) for s in self.chars), default=0)

    def __len__(self) -> int:
        return len(self.words) + len(self.chars)

    @staticmethod
    def _terms(field: str, column: pd.Series) -> dict[str, Term]:
        values = set()
        for cell in column.dropna():
            values.update(cell if isinstance(cell, (list, tuple)) or hasattr(cell, "tolist") else [cell])
        values = {str(v).strip() for v in values if str(v).strip()}
        by_surface: dict[str, set] = defaultdict(set)
        names: dict[str, str] = {}
        for value in sorted(values):  # sorted: the name a surface shows does not depend on set order
            parts = PATH_SEPARATORS.split(value)
            for segment in parts[1:] if len(parts) > 1 else parts:
                surface = lower(segment)
                by_surface[surface].add(value)
                names.setdefault(surface, segment)
        for names_of in CONCEPTS.values():
            hit = [s for s in names_of if s in by_surface]
            for surface in names_of if hit else ():
                for s in hit:
                    by_surface[surface] |= by_surface[s]
                    names.setdefault(surface, names[s])
        return {s: Term(field, names[s], tuple(sorted(v))) for s, v in by_surface.items() if len(s) >= 2}

    def _add(self, surface: str, term: Term) -> None:
        if HAS_CJK.search(surface):
            self.chars.setdefault(surface, term)
        else:
            words = tuple(w for w, _, _ in latin_words(surface))
            if words and len(words) <= MAX_WORDS and "".join(words).replace(" ", "") and not words[0].isdigit():
                self.words.setdefault(words, term)

    def _widen_to_product_lines(self) -> None:
        """A Latin term stands for the values that extend it as well: "BEHR" for "BEHR Premium Plus"
        (a catalogue may keep product lines as brands)."""
        wider: dict[tuple, set] = defaultdict(set)
        for words, term in self.words.items():
            for n in range(1, len(words)):
                shorter = self.words.get(words[:n])
                if shorter is not None and shorter.field == term.field:
                    wider[words[:n]].update(term.values)
        for words, values in wider.items():
            term = self.words[words]
            self.words[words] = Term(term.field, term.name, tuple(sorted(set(term.values) | values)))

    def _drop_ordinary_words(self, frame: pd.DataFrame, titles: list[str]) -> None:
        """Drop the Latin terms that titles mostly use as ordinary words, and keep the counts of each
        term's phrases with its neighbouring word ("crown moulding"), for ``find`` to check in context."""
        if not titles or not self.words:
            return
        seen, carried = Counter(), Counter()
        wanted = set(self.words)
        for i, title in enumerate(titles):
            words = [w for w, _, _ in latin_words(title)]
            for n in range(1, MAX_WORDS + 1):
                for j in range(len(words) - n + 1):
                    gram = tuple(words[j:j + n])
                    if gram not in wanted:
                        continue
                    term = self.words[gram]
                    cell = frame[term.field].iat[i]
                    held = cell if isinstance(cell, (list, tuple)) or hasattr(cell, "tolist") else [cell]
                    has = any(v in term.values for v in held if isinstance(v, str))
                    phrases = [gram]
                    if j + n < len(words):
                        phrases.append(gram + (words[j + n],))
                    if j > 0:
                        phrases.append((words[j - 1],) + gram)
                    for phrase in phrases:
                        seen[phrase] += 1
                        carried[phrase] += has
        for gram in list(self.words):
            if seen[gram] and carried[gram] < BRAND_SHARE * seen[gram]:
                del self.words[gram]
        # a phrase seen in a few titles, mostly without the attribute: the word is ordinary there
        self.ordinary_phrases = {p for p, count in seen.items() if len(p) > 1 and count >= PHRASE_EVIDENCE
                                 and carried[p] < BRAND_SHARE * count}

    def _in_ordinary_phrase(self, words: list, i: int, n: int) -> bool:
        gram = tuple(w for w, _, _ in words[i:i + n])
        after = gram + (words[i + n][0],) if i + n < len(words) else None
        before = (words[i - 1][0],) + gram if i > 0 else None
        return after in self.ordinary_phrases or before in self.ordinary_phrases

    def find(self, text: str, taken: list[tuple[int, int]]) -> list[tuple[int, int, Term]]:
        """Terms in ``text`` (already lower-cased), longest first, not overlapping each other or ``taken``."""
        found = []
        words = latin_words(text)
        for i in range(len(words)):
            for n in range(min(MAX_WORDS, len(words) - i), 0, -1):
                gram = tuple(w for w, _, _ in words[i:i + n])
                term = self.words.get(gram)
                if term is None and n > 1:  # "traffic master" for TrafficMASTER
                    term = self.words.get(("".join(gram),))
                if term is not None and not self._in_ordinary_phrase(words, i, n):
                    found.append((words[i][1], words[i + n - 1][2], term))
                    break
        if self.chars:
            for i in range(len(text)):
                for n in range(min(self.longest_chars, len(text) - i), 1, -1):
                    term = self.chars.get(text[i:i + n])
                    if term is not None:
                        found.append((i, i + n, term))
                        break
        found.sort(key=lambda f: (-(f[1] - f[0]), f[0]))
        kept, claimed = [], list(taken)
        for start, end, term in found:
            if not any(start < b and a < end for a, b in claimed):
                claimed.append((start, end))
                kept.append((start, end, term))
        return sorted(kept, key=lambda f: f[0])
