from common.text import normalize_text, product_text


def test_normalize_collapses_whitespace_and_strips_invisible_characters():
    assert normalize_text("  light\tjacket\n\nfor  spring ") == "light jacket for spring"
    assert normalize_text("deck\x00over") == "deck over"
    assert normalize_text("zero\u200bwidth\ufeff") == "zero width"


def test_normalize_applies_nfkc_and_keeps_case_and_unicode():
    assert normalize_text("ｆｕｌｌ－ｗｉｄｔｈ") == "full-width"
    assert normalize_text("1½ in. Pipe") == "11⁄2 in. Pipe"
    assert normalize_text("轻便夹克 🧥") == "轻便夹克 🧥"


def test_normalize_reads_html_entities_once_or_twice_escaped_and_leaves_bare_ampersands():
    assert normalize_text("Women&#39;s Boot") == "Women's Boot"
    assert normalize_text("Nuts &amp; Bolts &quot;Pro&quot;") == 'Nuts & Bolts "Pro"'
    assert normalize_text("Men&amp;#39;s &amp;amp; more") == "Men's & more"
    assert normalize_text("AT&T, B&Q & P&G &bogus; &#x41;") == "AT&T, B&Q & P&G &bogus; A"
    assert normalize_text("line&#10;break&nbsp;here") == "line break here"


def test_normalize_is_idempotent_and_total():
    for text in ["  A  b ", "x\x00y", "ﬁne", "", None, 42, "&amp;amp;amp;", "&#65312;amp;", "＆ａｍｐ；lt;"]:
        once = normalize_text(text)
        assert normalize_text(once) == once
    assert normalize_text(None) == ""
    assert normalize_text(42) == "42"


def test_product_text_puts_title_first_then_description_and_attributes():
    text = product_text(" Oak Chair ", "Solid  wood.", [("color", "brown"), ("size", " ")])
    assert text == "Oak Chair. Solid wood.. color: brown"
