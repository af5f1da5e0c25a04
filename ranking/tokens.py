"""The lexical side's tokeniser: English words stemmed, Chinese / Japanese / Korean text as characters
and character pairs.

BM25 needs words, and CJK text has no spaces between them: "我需要一件适合春游的外套" is one run
of letters, and a whitespace tokeniser would make it one token that matches nothing. Each run of
Han, Kana or Hangul characters therefore becomes its characters (unigrams) and its overlapping
character pairs (bigrams): "外套" in a query matches "外套" in a title as the bigram, and a shop's
word the tokeniser does not know still matches character by character. Everything else is read as
before: lower case, words of two or more letters or digits, English stopwords removed, Snowball
English stemming, which is what bm25s's own tokeniser does, so English rankings are unchanged.
Mixed text ("iPhone 15 手机壳") takes both paths.
"""

from __future__ import annotations

import re
from functools import lru_cache

from common.text import normalize_text

# Han (with extensions and compatibility ideographs), Hiragana, Katakana, Hangul syllables and jamo
CJK_CHARS = ("\u1100-\u11ff\u3040-\u309f\u30a0-\u30ff\u3130-\u318f\u31f0-\u31ff\u3400-\u4dbf"
             "\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0003134f")
CJK_RUNS = re.compile(f"([{CJK_CHARS}]+)")
_WORD = re.compile(r"(?u)\b\w\w+\b")  # bm25s's default token pattern


def cjk_grams(run: str) -> list[str]:
    """A CJK run's characters, then its overlapping character pairs."""
    return list(run) + [run[i:i + 2] for i in range(len(run) - 1)]


class LexicalTokenizer:
    """Text -> BM25 tokens; one instance per index (it caches stems). ``cjk`` cuts a CJK run into
    tokens (benchmarks/quality/bench_multilingual.py measures a word segmenter there)."""

    def __init__(self, cjk=cjk_grams):
        import Stemmer
        from bm25s.stopwords import STOPWORDS_EN

        self._cjk = cjk
        self._stopwords = frozenset(STOPWORDS_EN)
        self._stemmer = Stemmer.Stemmer("english")
        self._stem = lru_cache(maxsize=200_000)(self._stemmer.stemWord)

    def __call__(self, text: str) -> list[str]:
        tokens = []
        for i, part in enumerate(CJK_RUNS.split(normalize_text(text).lower())):
            if i % 2:  # split() with a group alternates: other text, CJK run, other text, ...
                tokens.extend(self._cjk(part))
            else:
                tokens.extend(self._stem(w) for w in _WORD.findall(part) if w not in self._stopwords)
        return tokens

    def many(self, texts) -> list[list[str]]:
        return [self(t) for t in texts]
