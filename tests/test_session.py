"""Session personalisation and explanations below HTTP (ranking/session.py, HybridIndex.search)."""

from __future__ import annotations

import numpy as np
import pytest

from ranking.hybrid import FirstStage, HybridIndex
from ranking.session import RESEMBLES_AT, explain, matched_words, personalised
from ranking.tokens import LexicalTokenizer


def unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_personalised_moves_the_query_toward_the_clicks_and_stays_a_unit_vector():
    query, click = unit([1, 0, 0]), unit([0, 1, 0])
    moved = personalised(query[None], [click[None]], weight=1.0)[0]
    assert np.linalg.norm(moved) == pytest.approx(1.0) and moved @ click > query @ click
    assert moved @ query > 0.5  # the words typed still count
    assert np.allclose(personalised(query[None], [None], 1.0)[0], query)  # no clicks: unchanged
    assert np.allclose(personalised(query[None], [click[None]], 0.0)[0], query)


def test_matched_words_compare_as_bm25_does():
    tokens = LexicalTokenizer()
    assert matched_words("Cordless drills for the garden", "DEWALT 20V cordless drill kit", tokens) == ["cordless",
                                                                                                        "drills"]
    assert matched_words("the and of", "the and of", tokens) == []  # stopwords explain nothing
    assert matched_words("外套", "轻薄外套 春季", tokens) == ["外套"]


def test_explain_names_words_sources_reranker_and_resemblance():
    tokens = LexicalTokenizer()
    hit = {"id": "p1", "title": "Cordless drill", "text": "Cordless drill 18V", "dense": 0.8, "lexical": 7.1,
           "resembles": ("p9", 0.83, "Impact driver")}
    why = explain("cordless drill", hit, tokens, rank=0, first_rank=3)
    assert why["matched"] == ["cordless", "drill"] and why["stages"] == ["lexical", "semantic"]
    assert why["reranker_moved"] == 3 and why["resembles"] == {"id": "p9", "title": "Impact driver", "similarity": 0.83}
    assert why["text"] == ("matches 'cordless', 'drill'; found by both BM25 and the encoder; moved up 3 by the "
                           "reranker; like 'Impact driver' you clicked")
    only_dense = explain("something to sit on", {"id": "c", "title": "Oak chair", "text": "Oak chair",
                                                 "dense": 0.5, "lexical": None, "resembles": None}, tokens, 2, None)
    assert only_dense["text"] == "found by the encoder" and only_dense["reranker_moved"] is None


@pytest.fixture()
def catalogue_index():
    """Six products in two families (drills, lamps) with vectors that say so."""
    from data_pipeline.index import ProductIndex

    ids = ["drill-a", "drill-b", "drill-c", "lamp-a", "lamp-b", "lamp-c"]
    titles = ["Cordless drill", "Hammer drill", "Drill bit set", "Desk lamp", "Floor lamp", "Lamp shade"]
    base = {"drill": unit([1, 0, 0, 0]), "lamp": unit([0, 1, 0, 0])}
    rng = np.random.default_rng(0)
    vectors = np.stack([unit(base[i.split("-")[0]] + 0.2 * rng.standard_normal(4)) for i in ids])
    index = ProductIndex.build(ids, vectors, model="m")
    return HybridIndex(index, ids, titles, titles), vectors


def test_a_click_pulls_its_family_up_excludes_itself_and_is_named(catalogue_index):
    hybrid, vectors = catalogue_index
    query = unit(2 * vectors[0] + vectors[3])[None]  # mostly a drill, a little a lamp
    stage = FirstStage(mode="dense", depth=6)
    before = [h["id"] for h in hybrid.search(query, ["something"], 6, stage)[0]]
    after = hybrid.search(query, ["something"], 6, stage, clicked=[["lamp-a"]], session_weight=2.0)[0]
    ids = [h["id"] for h in after]
    assert "lamp-a" not in ids  # a clicked product is not shown again
    assert [i for i in ids if i.startswith("lamp")] == ids[:2]  # its family moved to the top
    assert before[:3] == [i for i in before if i.startswith("drill")]  # before: the drills led
    resembled = [h for h in after if h["resembles"]]
    assert resembled and all(h["resembles"][0] == "lamp-a" and h["resembles"][1] >= RESEMBLES_AT and
                             h["resembles"][2] == "Desk lamp" for h in resembled)
    assert {h["id"] for h in resembled} >= {"lamp-b", "lamp-c"}
    assert hybrid.vectors_of(["drill-a", "nope"]).keys() == {"drill-a"}
