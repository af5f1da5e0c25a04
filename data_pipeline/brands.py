"""A brand for catalogues that only have titles (Home Depot): read off the title's first words.

Shops put the brand first ("KOHLER Archer 6 ft. Soaking Tub", "Home Decorators Collection 3-Light
Flush Mount"), so the rule is positional and counts over the whole catalogue:

1. The candidate words are the title's leading words before the first word holding a digit or a
   unit ("1/2", "24 in.", "3-Light"), at most ``MAX_WORDS``.
2. A phrase *leads* when at least ``MIN_PRODUCTS`` titles begin with it and it stands first in at
   least ``MIN_LEADING`` of the titles holding it anywhere (a brand leads its titles; a colour, a
   material or a word such as "Home" or "Commercial" sits anywhere). The brand starts as the
   shortest leading prefix ("Home" does not lead, "Home Decorators" does).
3. It grows by one word while the longer prefix leads too and still begins at least ``MIN_SHARE`` of
   the titles the shorter one begins ("Hampton" -> "Hampton Bay", "Home Decorators" -> "Home
   Decorators Collection"), and stops where titles branch into product lines ("KOHLER" -> Archer,
   Tresham, Pinstripe ...; "Delta" -> Vero, Lahara ...).

Titles with no leading prefix get no brand (None), never a guess. The rule's precision was
checked by hand on a seeded sample of Home Depot titles: docs/data.md ("Derived brand") has the
figure and the kinds of error it makes.
"""

from __future__ import annotations

import re
from collections import Counter

MIN_PRODUCTS = 5
MIN_LEADING = 0.6
MIN_SHARE = 0.5
MAX_WORDS = 3
_NOT_A_NAME = re.compile(r"\d|^[^A-Za-z]|^(?:in|ft|x|and|with|for|the|of|or|a)\.?$", re.IGNORECASE)


def leading_words(title: str) -> list[str]:
    words = []
    for word in (title or "").split():
        if _NOT_A_NAME.search(word) or len(words) == MAX_WORDS:
            break
        words.append(word)
    return words


def derive_brands(titles: list[str]) -> list[str | None]:
    """Per title, its brand by the rule above, or None."""
    heads = [tuple(leading_words(t)) for t in titles]
    starts = Counter()
    for words in heads:
        for n in range(1, len(words) + 1):
            starts[words[:n]] += 1
    anywhere = Counter()  # titles holding a candidate phrase at any position
    for title in titles:
        words = tuple((title or "").split())
        anywhere.update({words[i:i + n] for n in range(1, MAX_WORDS + 1) for i in range(len(words) - n + 1)
                         if words[i:i + n] in starts})

    def leads(phrase) -> bool:
        return starts[phrase] >= MIN_PRODUCTS and starts[phrase] >= MIN_LEADING * anywhere[phrase]

    brands = []
    for words in heads:
        n = next((n for n in range(1, len(words) + 1) if leads(words[:n])), None)
        if n is None:
            brands.append(None)
            continue
        while n < len(words) and leads(words[:n + 1]) and starts[words[:n + 1]] >= MIN_SHARE * starts[words[:n]]:
            n += 1
        brands.append(" ".join(words[:n]))
    return brands
