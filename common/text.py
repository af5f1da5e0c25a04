"""The one text normalisation FirstLight applies, at training, indexing and serving time alike.

Every text that reaches the encoder or BM25 passes through :func:`normalize_text`, so a query typed
into the live endpoint is seen exactly as the same words were seen in training.
"""

import re
import unicodedata

# Control and format characters (NUL, zero-width spaces, BOM, bidi marks) carry no meaning for
# retrieval but split tokens or break tokenizers; they become spaces.
_INVISIBLE = re.compile(r"[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u2028-\u202f\u2060-\u206f\ufeff]")
_SPACES = re.compile(r"\s+")


def normalize_text(text) -> str:
    """NFKC-normalise, replace control/zero-width characters by spaces, collapse whitespace, strip.

    Case is kept: uncased models lowercase in their tokenizer, cased models need it. The function is
    idempotent, so applying it twice (say, in the pipeline and again in the encoder) changes nothing.
    """
    if text is None:
        return ""
    if not isinstance(text, str):
        text = str(text)
    text = unicodedata.normalize("NFKC", text)
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
