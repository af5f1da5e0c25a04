"""Typo augmentation: teach the encoder that "cieling fan" means "ceiling fan".

A new visitor types fast. About one Home Depot query in seven holds a misspelt or run-together word,
and a WordPiece tokenizer cuts a misspelt word into pieces the pretrained model never tied to the
right one. Query-time correction (firstlight.spelling) fixes words one edit from a catalogue word;
training on queries with such slips (typo-aware training) is meant to teach the model the rest. On
Home Depot it did not, not even on the misspelt test queries (benchmarks/RESULTS.md, ablations):
shoppers there misspell by sound ("flourescent"), not by one key. It stays an option, off by default.

``add_typo`` makes one human-like slip in one word of 4+ letters: a letter dropped, doubled, swapped
with its neighbour, or replaced by a key next to it on a QWERTY keyboard.
"""

from __future__ import annotations

import re

import numpy as np

from firstlight.spelling import MIN_LENGTH  # the speller leaves shorter words ("ft", "gal", "pvc") alone too

_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
_POSITION = {c: (r, i) for r, row in enumerate(_ROWS) for i, c in enumerate(row)}
# keys that touch each letter on a QWERTY keyboard. Rows are staggered: the row above meets a key at
# its own index and the next, the row below at the previous index and its own ("g": t y, f h, v b).
_TOUCHING = {-1: (0, 1), 0: (-1, 1), 1: (-1, 0)}
NEIGHBOURS = {
    c: "".join(_ROWS[r + dr][i + di] for dr, offsets in _TOUCHING.items() for di in offsets
               if 0 <= r + dr < 3 and 0 <= i + di < len(_ROWS[r + dr]))
    for c, (r, i) in _POSITION.items()
}
_WORD = re.compile(r"[A-Za-z]{%d,}" % MIN_LENGTH)
SLIPS = ("drop", "double", "swap", "neighbour")


def misspell(word: str, rng: np.random.Generator) -> str:
    """``word`` with one slip, at a position past its first letter (people rarely miss the first)."""
    slip = SLIPS[int(rng.integers(len(SLIPS)))]
    i = int(rng.integers(1, len(word)))
    if slip == "drop":
        return word[:i] + word[i + 1:]
    if slip == "double":
        return word[:i] + word[i] + word[i:]
    if slip == "swap":
        i = min(i, len(word) - 2)
        if word[i] == word[i + 1]:  # swapping equal letters changes nothing: drop one instead
            return word[:i] + word[i + 1:]
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    near = NEIGHBOURS[word[i].lower()]  # callers pass ASCII letters only (see add_typo)
    key = near[int(rng.integers(len(near)))]
    return word[:i] + (key.upper() if word[i].isupper() else key) + word[i + 1:]


def add_typo(query: str, rng: np.random.Generator) -> str:
    """``query`` with one slip in one of its words of 4+ letters (unchanged when it has none)."""
    words = list(_WORD.finditer(query))
    if not words:
        return query
    m = words[int(rng.integers(len(words)))]
    return query[:m.start()] + misspell(m.group(), rng) + query[m.end():]
