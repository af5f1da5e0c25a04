"""Query spelling correction from the catalogue's own words.

Shoppers misspell ("cieling fan", "moen dhower faucet") and run words together ("deckpaint"); a
product title never does. A word of the query that is neither in the catalogue nor an English word is
replaced by the catalogue word one edit away (the most frequent in the catalogue), else split into
catalogue words ("wiremesh" -> "wire mesh"), else by a catalogue word two edits away (long words
only). Everything else (numbers, sizes like "2x4", punctuation, Chinese / Japanese / Korean text,
words the catalogue or English knows) is kept as typed, case included; a corrected word is lower case. Edit-distance lookup is
SymSpell (symspellpy), whose bundled English frequency list is the "English word" test.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

_TOKENS = re.compile(r"[A-Za-z]+|[^A-Za-z]+")  # words, and everything between them (kept as is)
_WORDS = re.compile(r"[a-z]+")
MIN_LENGTH = 4  # shorter words are too often abbreviations ("ft", "gal", "pvc") to correct safely
TWO_EDITS_FROM = 6  # two edits change a shorter word into too many others


def _english_words() -> frozenset[str]:
    import symspellpy

    path = Path(symspellpy.__file__).parent / "frequency_dictionary_en_82_765.txt"
    with open(path, encoding="utf-8") as fh:
        return frozenset(line.split()[0] for line in fh if line.strip())


class QuerySpeller:
    """Corrects query words against a catalogue's vocabulary. Build once, call ``correct`` per query."""

    def __init__(self, catalogue_texts: Iterable[str]):
        from symspellpy import SymSpell

        self.vocabulary = Counter(w for text in catalogue_texts for w in _WORDS.findall(str(text).lower()))
        if not self.vocabulary:
            raise ValueError("the catalogue has no words to correct queries against")
        self.english = _english_words()
        self._symspell = SymSpell(max_dictionary_edit_distance=2)
        for word, count in self.vocabulary.items():
            if len(word) >= 2:
                self._symspell.create_dictionary_entry(word, count)

    def add_texts(self, texts: Iterable[str]) -> None:
        """Learn the words of new products (added while serving), so they are never "corrected" away."""
        for word in (w for text in texts for w in _WORDS.findall(str(text).lower())):
            self.vocabulary[word] += 1
            if len(word) >= 2:
                self._symspell.create_dictionary_entry(word, 1)

    def known(self, word: str) -> bool:
        return word in self.vocabulary or word in self.english

    def correct_word(self, word: str) -> str:
        from symspellpy import Verbosity

        if len(word) < MIN_LENGTH or self.known(word):
            return word
        near = self._symspell.lookup(word, Verbosity.TOP, max_edit_distance=1)
        if near:
            return near[0].term
        if len(word) >= TWO_EDITS_FROM:
            parts = self._symspell.word_segmentation(word, max_edit_distance=0).corrected_string.split()
            if len(parts) >= 2 and all(len(p) >= 3 and p in self.vocabulary for p in parts):
                return " ".join(parts)
            far = self._symspell.lookup(word, Verbosity.TOP, max_edit_distance=2)
            if far:
                return far[0].term
        return word

    def correct(self, query: str) -> str:
        """The query with each unknown word replaced by its correction."""
        out = []
        for token in _TOKENS.findall(query):
            # only Latin words are corrected: a CJK run has no spaces to tell its words apart
            fixed = self.correct_word(token.lower()) if token.isascii() and token.isalpha() else token
            out.append(token if fixed == token.lower() else fixed)
        return "".join(out)
