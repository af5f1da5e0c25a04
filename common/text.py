"""The one text normalisation FirstLight applies, at training, indexing and serving time alike.

Every text that reaches the encoder or BM25 passes through :func:`normalize_text`, so a query typed
into the live endpoint is seen exactly as the same words were seen in training.
"""

import html
import re
import unicodedata

# Control and format characters (NUL, zero-width spaces, BOM, bidi marks) carry no meaning for
# retrieval but split tokens or break tokenizers; they become spaces.
_INVISIBLE = re.compile(r"[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u2028-\u202f\u2060-\u206f\ufeff]")
_SPACES = re.compile(r"\s+")
# HTML character references with their semicolon ("Women&#39;s", "&amp;", "&quot;"): shop exports carry
# them escaped once or twice ("&amp;#39;"). Only the terminated form is read, so "AT&T" or "B&Q" stay.
_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")


def _unescaped(text: str) -> str:
    """``text`` with its HTML character references read, until none is left (each pass shortens the
    text, so this ends, and a second call finds nothing to do)."""
    while True:
        read = _ENTITY.sub(lambda m: html.unescape(m.group(0)), text)
        if read == text:
            return text
        text = unicodedata.normalize("NFKC", read)


def normalize_text(text) -> str:
    """NFKC-normalise, read HTML character references, replace control/zero-width characters by
    spaces, collapse whitespace, strip.

    Case is kept: uncased models lowercase in their tokenizer, cased models need it. The function is
    idempotent, so applying it twice (say, in the pipeline and again in the encoder) changes nothing.
    """
    if text is None:
        return ""
    if not isinstance(text, str):
        text = str(text)
    text = _unescaped(unicodedata.normalize("NFKC", text))
    text = _INVISIBLE.sub(" ", text)
    return _SPACES.sub(" ", text).strip()


def product_text(title, description=None, attributes=None) -> str:
    """The text that represents a product: its title, then description, then 'key: value' attributes.

    Titles come first because encoders truncate at their max length and the title carries most of
    the signal.
    """
    parts = [normalize_text(title)]
    if description is not None:
        parts.append(normalize_text(description))
    if attributes:
        parts.extend(f"{normalize_text(k)}: {normalize_text(v)}" for k, v in attributes if normalize_text(v))
    return normalize_text(". ".join(p for p in parts if p))
