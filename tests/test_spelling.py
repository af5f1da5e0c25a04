"""Query spelling correction against the catalogue's words."""

import pytest

from common.spelling import QuerySpeller

TITLES = [
    "Hampton Bay 52 in. Ceiling Fan with Light Kit",
    "MOEN Banbury Single-Handle Shower Faucet in Chrome",
    "Rust-Oleum 1 qt. Deck Paint in Tint Base",
    "Everbilt 2 ft. x 4 ft. Galvanized Wire Mesh",
    "DEWALT 20-Volt Reciprocating Saw (Tool-Only)",
    "Porcelain Floor Tile 12 in. x 12 in.",
    "Porcelain Floor Tile 18 in. x 18 in.",
]


@pytest.fixture(scope="module")
def speller():
    return QuerySpeller(TITLES)


@pytest.mark.parametrize("query, expected", [
    ("cieling fan", "ceiling fan"),  # one edit (a transposition)
    ("moen dhower faucet", "moen shower faucet"),  # one substitution
    ("wiremesh", "wire mesh"),  # run together: split into catalogue words
    ("deckpaint", "deck paint"),
    ("dewalt recepricating saw", "dewalt reciprocating saw"),  # two edits, long word
    ("procelian tile", "porcelain tile"),  # two edits (two transpositions)
])
def test_misspelt_words_become_catalogue_words(speller, query, expected):
    assert speller.correct(query) == expected


@pytest.mark.parametrize("query", [
    "fan 52 inches",  # English, though the catalogue writes "in."
    "2x4x8 stud $3.99",  # numbers, sizes, symbols
    "sink ft gal",  # short words are kept: they are too often abbreviations
    "Ceiling Fan",  # known words keep their case
    "水槽 café",  # other scripts and accents
    "",
])
def test_known_words_numbers_and_other_scripts_stay_as_typed(speller, query):
    assert speller.correct(query) == query


def test_corrected_word_in_a_mixed_query_keeps_the_rest(speller):
    assert speller.correct("Hampton Bay CIELING fan, 52in!") == "Hampton Bay ceiling fan, 52in!"


def test_among_words_one_edit_away_the_most_frequent_in_the_catalogue_wins():
    speller = QuerySpeller(["Drive Belt", "Fan Belt", "V-Belt", "Hex Bolt"])
    assert speller.vocabulary["belt"] == 3 and speller.vocabulary["bolt"] == 1
    assert speller.correct("fan bilt") == "fan belt"  # one edit from both


def test_an_empty_catalogue_is_a_clear_error():
    with pytest.raises(ValueError, match="no words"):
        QuerySpeller(["", "123 456"])
