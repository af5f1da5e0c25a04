"""Pseudo-queries from product text alone: what a shop with no judged queries can train on.

Real product queries are short and noun-heavy ("cordless drill", "kohler toilet seat", "夹克"), and
mostly words of the product's own title. Each generator below writes queries of that shape for one
product, seeded by (seed, product id, generator), so a catalogue gives the same queries on every run
and on any number of Ray Data workers:

- ``span``: a run of 1-4 consecutive title words, ending at the last word of the title's main clause
  (before "with", "for", a comma ...: where English titles put the product's noun) half the time;
- ``keywords``: 2-3 title words in title order, the rarer words (by document frequency in the
  catalogue) more likely: a shopper names what sets the product apart;
- ``attributes``: templates over the catalogue's typed attributes ("{brand} {noun}",
  "{colour}{category}", "{season}季{category}"), where the catalogue has them.

Chinese titles are cut at spaces into segments; a segment's last 2-4 characters stand for its noun
(Chinese puts the head noun last). Which queries make training pairs, and with which negatives, is
decided by the zero-shot first stage (train/synthetic_pairs.py).
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter

import numpy as np

GENERATORS = ("span", "keywords", "attributes")
STOP = frozenset("a an and the of for with in on to by or from at as is x w/ - & + / |".split())
CLAUSE_END = re.compile(r"\s(?:with|for|in|by|and|including|featuring|w/)\s|[,;(]| - ", re.I)
WORD = re.compile(r"[\w][\w.\-/#\"']*", re.U)
HAN = re.compile(r"[\u4e00-\u9fff]")


def words(title: str) -> list[str]:
    """Lower-cased title words; a Chinese title's space-separated segments."""
    return [w.strip(".-/'\"").lower() for w in WORD.findall(title) if w.strip(".-/'\"")]


def content(tokens: list[str]) -> list[str]:
    return [t for t in tokens if t not in STOP and not t.isdigit()]


def rng_for(seed: int, product_id: str, generator: str) -> np.random.Generator:
    digest = hashlib.blake2b(f"{seed}\x00{product_id}\x00{generator}".encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


def head_noun(segment: str, rng) -> str:
    """A Chinese segment's last 2-4 characters (its noun); an English phrase's last word."""
    if HAN.search(segment):
        n = min(len(segment), int(rng.integers(2, 5)))
        return segment[-n:]
    tokens = content(words(segment))
    return tokens[-1] if tokens else ""


def span_query(title: str, rng) -> str:
    if HAN.search(title):
        segments = [s for s in title.split() if s]
        segment = segments[int(rng.integers(len(segments)))] if segments else ""
        return head_noun(segment, rng) if rng.random() < 0.5 else segment
    main = content(words(CLAUSE_END.split(title, maxsplit=1)[0])) or content(words(title))
    if not main:
        return ""
    length = min(len(main), int(rng.choice([1, 2, 3, 4], p=[0.15, 0.4, 0.3, 0.15])))
    end = len(main) if rng.random() < 0.5 else int(rng.integers(length, len(main) + 1))
    return " ".join(main[end - length:end])


def keywords_query(title: str, rng, document_frequency: Counter, n_products: int) -> str:
    tokens = list(dict.fromkeys(content(words(title))))
    if len(tokens) < 2:
        return " ".join(tokens)
    weights = np.array([np.log((n_products + 1) / (document_frequency.get(t, 0) + 1)) + 0.1 for t in tokens])
    n = min(len(tokens), int(rng.integers(2, 4)))
    picked = sorted(rng.choice(len(tokens), size=n, replace=False, p=weights / weights.sum()))
    return " ".join(tokens[i] for i in picked)


def _value(row: dict, name: str):
    """A set attribute's value; None for a missing column, None or NaN (pandas' missing value)."""
    value = row.get(name)
    if value is None or (isinstance(value, float) and value != value):
        return None
    return value


def attributes_query(row: dict, rng) -> str:
    """One template over the product's attributes that are set; "" when it has none."""
    title = str(_value(row, "title") or "")
    noun = head_noun(CLAUSE_END.split(title, maxsplit=1)[0] if not HAN.search(title) else
                     (title.split() or [""])[0], rng)
    category = str(_value(row, "category") or "").split("/")[-1]
    options = []
    if _value(row, "brand"):
        options.append(f"{str(row['brand']).lower()} {category or noun}".strip())
    colour = _value(row, "colour") or _value(row, "color")
    if colour and (category or noun):
        options.append(f"{colour}{category or noun}" if HAN.search(str(colour)) else f"{colour} {noun}".lower())
    season = _value(row, "season")
    if season is not None and len(season) and category:
        options.append(f"{season[int(rng.integers(len(season)))]}季{category}")
    return options[int(rng.integers(len(options)))] if options else ""


def document_frequencies(titles) -> Counter:
    counts: Counter = Counter()
    for title in titles:
        counts.update(set(content(words(str(title)))))
    return counts


class Generate:
    """Ray Data batch function: one query per (product, generator) of ``generators``; empty ones dropped."""

    def __init__(self, generators: tuple[str, ...], seed: int, document_frequency: Counter, n_products: int):
        self.generators, self.seed = generators, seed
        self.document_frequency, self.n_products = document_frequency, n_products

    def __call__(self, batch):
        rows = []
        for row in batch.to_dict("records"):
            title = str(row.get("title") or "")
            for generator in self.generators:
                rng = rng_for(self.seed, str(row["product_id"]), generator)
                if generator == "span":
                    query = span_query(title, rng)
                elif generator == "keywords":
                    query = keywords_query(title, rng, self.document_frequency, self.n_products)
                else:
                    query = attributes_query(row, rng)
                if query and query != title.lower():
                    rows.append({"query": query, "product_id": str(row["product_id"]), "generator": generator})
        import pandas as pd

        return pd.DataFrame(rows, columns=["query", "product_id", "generator"])
