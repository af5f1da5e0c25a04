"""The shared ranking path: fusion equal to ranx's, BM25 with live changes, the hybrid first stage,
the rerank step. Real bm25s, FAISS and a real (tiny) encoder; no Ray."""

from __future__ import annotations

import numpy as np
import pytest

from data_pipeline.index import ProductIndex
from ranking.fusion import fuse_lists, fuse_runs
from ranking.hybrid import FirstStage, HybridIndex
from ranking.lexical import LexicalIndex
from ranking.rerank import as_run, rerank

TITLES = {
    "p1": "DEWALT 20-Volt MAX Cordless Drill Kit",
    "p2": "Milwaukee M18 Cordless Impact Driver",
    "p3": "Rheem Performance 40 Gal. Water Heater XE40M06",
    "p4": "Rust-Oleum 12 oz. Flat Black Spray Paint",
    "p5": "Husky 3/8 in. Drive Ratchet Set",
    "p6": "GE 30 in. Electric Range in Stainless Steel",
}


def ranx_fuse(runs: list[dict], method: str, params: dict) -> dict:
    from ranx import Run, fuse

    return fuse([Run.from_dict(r) for r in runs], method=method, params=params,
                norm="min-max" if method == "wsum" else None).to_dict()


def test_fusion_equals_ranx_on_random_runs():
    rng = np.random.default_rng(0)
    runs = [{f"q{i}": {f"d{j}": float(rng.random() * scale) for j in rng.choice(40, 15, replace=False)}
             for i in range(6)} for scale in (1.0, 12.0)]
    for method, params in (("rrf", {"k": 60}), ("wsum", {"weights": [0.3, 0.7]})):
        ours, theirs = fuse_runs(runs, method, params), ranx_fuse(runs, method, params)
        assert ours.keys() == theirs.keys()
        for q in ours:
            assert ours[q].keys() == theirs[q].keys()
            assert max(abs(ours[q][d] - theirs[q][d]) for d in ours[q]) < 1e-9
    assert list(fuse_lists([{"a": 2.0, "b": 1.0}, {"b": 3.0, "c": 1.0}], "rrf", {"k": 1})) == ["b", "a", "c"]
    # a lexical list shorter than asked is normalised from 0: a lone exact match counts in full
    lone = fuse_lists([{"a": 0.9, "b": 0.8, "c": 0.1}, {"b": 7.5}], "wsum", {"weights": [0.5, 0.5]}, depth=3)
    assert list(lone)[0] == "b" and lone["b"] == pytest.approx(0.5 * 0.875 + 0.5)


def test_lexical_side_scores_added_products_like_saved_ones_and_masks_deleted():
    lexical = LexicalIndex(list(TITLES), list(TITLES.values()))
    saved = lexical.search(["cordless drill"], 5)[0]
    assert next(iter(saved)) == "p1"
    lexical.upsert("new", TITLES["p1"])  # the same text: the same BM25 score as the saved copy
    again = lexical.search(["cordless drill"], 5)[0]
    assert again["new"] == pytest.approx(again["p1"], rel=1e-5)
    lexical.delete("p1")
    lexical.delete("new")
    after = lexical.search(["cordless drill"], 5)[0]
    assert "p1" not in after and "new" not in after and "p2" in after
    lexical.upsert("p2", "Garden Hose 50 ft.")  # a changed product is found by its new words only
    assert "p2" not in lexical.search(["cordless"], 5)[0] and "p2" in lexical.search(["hose"], 5)[0]
    assert len(lexical) == len(TITLES) - 1


@pytest.fixture()
def hybrid(tiny_model_dir):
    from model.encoder import TextEncoder

    encoder = TextEncoder.load(str(tiny_model_dir), max_length=32)
    ids, titles = list(TITLES), list(TITLES.values())
    index = ProductIndex.build(ids, encoder.encode(titles), model=str(tiny_model_dir))
    return HybridIndex(index, ids, titles, titles), encoder


HEATERS = {  # near-identical titles that differ in the model number a shopper copied from the old unit
    "tall": "Rheem Performance 40 Gal. Tall 6 Year Electric Water Heater XE40T06ST45U1",
    "short": "Rheem Performance 40 Gal. Short 6 Year Electric Water Heater XE40S06ST45U1",
    "plus": "Rheem Performance Plus 40 Gal. Tall 9 Year Electric Water Heater XE40M09EL45U1",
    "fifty": "Rheem Performance 50 Gal. Tall 6 Year Electric Water Heater XE50T06ST45U1",
    "plain": "Rheem Performance 40 Gal. Medium 6 Year Electric Water Heater",
}


def test_hybrid_finds_an_exact_model_number_the_dense_model_misses():
    from model.encoder import TextEncoder

    encoder = TextEncoder.load("all-MiniLM-L6-v2")  # the real pretrained MiniLM
    ids, titles = list(HEATERS), list(HEATERS.values())
    index = HybridIndex(ProductIndex.build(ids, encoder.encode(titles), model="all-MiniLM-L6-v2"), ids, titles, titles)
    query = "rheem water heater xe40m09el45u1"
    vector = encoder.encode([query])
    dense = index.search(vector, [query], 3, FirstStage(mode="dense"))[0]
    hybrid = index.search(vector, [query], 3, FirstStage())[0]  # the served default
    assert dense[0]["id"] != "plus"  # word pieces of a model number blur together in the embedding
    assert hybrid[0]["id"] == "plus" and hybrid[0]["lexical"] > 0 and hybrid[0]["dense"] is not None


def test_hybrid_changes_reach_both_sides(hybrid):
    index, encoder = hybrid
    text = "Ryobi ONE+ Cordless Leaf Blower QZ-7731"
    index.upsert("new", text, text, encoder.encode([text])[0])
    lexical = FirstStage(mode="lexical")
    assert index.search(encoder.encode(["qz-7731"]), ["qz-7731"], 3, lexical)[0][0]["id"] == "new"
    dense = index.search(encoder.encode([text]), [text], 1, FirstStage(mode="dense"))[0]
    assert dense[0]["id"] == "new"
    index.delete("new")
    for stage in (lexical, FirstStage(mode="dense"), FirstStage()):
        assert "new" not in [c["id"] for c in index.search(encoder.encode([text]), [text], 10, stage)[0]]
    assert not index.contains("new") and len(index) == len(TITLES)


def test_rerank_reorders_the_head_keeps_the_tail_and_blends():
    cands = [{"id": f"p{i}", "score": 1.0 - 0.1 * i} for i in range(5)]
    out = rerank(cands, [0.1, 0.9, 0.5], depth=3)
    assert [c["id"] for c in out] == ["p1", "p2", "p0", "p3", "p4"]
    assert out[0]["rerank"] == pytest.approx(0.9) and out[0]["first_stage"] == pytest.approx(0.9)
    # a blend that leans on the first stage keeps its order when the reranker only slightly disagrees
    blended = rerank(cands, [0.50, 0.51, 0.49], depth=3, weight=0.2)
    assert [c["id"] for c in blended][:3] == ["p0", "p1", "p2"]
    run = as_run(out)
    assert sorted(run, key=lambda p: -run[p]) == [c["id"] for c in out]
    with pytest.raises(ValueError, match="2 reranker scores for 3"):
        rerank(cands, [0.1, 0.2], depth=3)


@pytest.mark.parametrize("mode", ["dense", "hybrid"])
def test_a_k_above_the_first_stage_depth_still_gets_k_products(hybrid, mode):
    """No depth can silently shorten a ranking: k above ``depth`` widens each side to k."""
    index, encoder = hybrid
    stage = FirstStage(mode=mode, depth=2)
    hits = index.search(encoder.encode(["cordless drill"]), ["cordless drill"], 5, stage)[0]
    assert len(hits) == 5 and len({h["id"] for h in hits}) == 5
    assert stage.reaching(5).depth == 5 and stage.reaching(1) is stage


def test_rerank_and_serving_depths_are_checked_against_each_other():
    from common.errors import ConfigError
    from ranking.rerank import RerankStage

    RerankStage(depth=100).validate("rerank.")  # the first stage widens to what the reranker needs
    with pytest.raises(ConfigError, match="'rerank.depth'.*between 1 and 100"):
        RerankStage(depth=101).validate("rerank.", most=100)  # evaluate's fused runs hold `depth` products
