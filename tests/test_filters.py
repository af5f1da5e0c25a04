"""Filters: the expression checker, the two evaluators (every saved product at once, one live
product) agreeing, the FAISS planner's paths, and both sides of the hybrid honouring a filter."""

import numpy as np
import pandas as pd
import pytest

from data_pipeline.index import IndexConfig, ProductIndex
from ranking.filters import (
    MAX_CONDITIONS,
    MAX_DEPTH,
    AttributeTable,
    FilterError,
    matches,
    parse_filter,
)
from ranking.hybrid import FirstStage, HybridIndex

SCHEMA = {"price": "number", "brand": "keyword", "in_stock": "boolean", "tags": "keywords"}
BRANDS = ["Makita", "DEWALT", "Ryobi", "Bosch", None]
TAGS = ["spring", "summer", "autumn", "winter"]


def catalogue(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "product_id": [f"p{i}" for i in range(n)],
        "price": [None if rng.random() < 0.1 else float(rng.integers(1, 200)) for _ in range(n)],
        "brand": [BRANDS[rng.integers(len(BRANDS))] for _ in range(n)],
        "in_stock": [None if rng.random() < 0.1 else bool(rng.random() < 0.7) for _ in range(n)],
        "tags": [list(rng.choice(TAGS, rng.integers(0, 3), replace=False)) or None for _ in range(n)],
    })


def random_filter(rng, depth: int = 0) -> dict:
    if depth < 2 and rng.random() < 0.4:
        op = ["and", "or", "not"][rng.integers(3)]
        if op == "not":
            return {"not": random_filter(rng, depth + 1)}
        return {op: [random_filter(rng, depth + 1) for _ in range(rng.integers(1, 4))]}
    field = list(SCHEMA)[rng.integers(len(SCHEMA))]
    if rng.random() < 0.15:
        return {"field": field, "exists": bool(rng.random() < 0.5)}
    if field == "price":
        if rng.random() < 0.7:
            bound = {"gte": float(rng.integers(0, 150))} if rng.random() < 0.5 else {"gt": float(rng.integers(0, 150))}
            bound.update({"lt": float(rng.integers(50, 220))} if rng.random() < 0.5 else {})
            return {"field": field, "range": bound}
        return {"field": field, "in": [float(rng.integers(1, 200)) for _ in range(5)]}
    if field == "in_stock":
        return {"field": field, "eq": bool(rng.random() < 0.5)}
    values = [b for b in BRANDS if b] if field == "brand" else TAGS
    if rng.random() < 0.5:
        return {"field": field, "eq": values[rng.integers(len(values))]}
    return {"field": field, "in": list(rng.choice(values, rng.integers(1, 3), replace=False)) + ["unknown"]}


def test_every_operator_means_the_same_over_the_table_and_on_one_product():
    frame = catalogue(300)
    table = AttributeTable(SCHEMA, frame)
    rows = [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
            for r in frame.to_dict("records")]
    rng = np.random.default_rng(1)
    seen_ops = set()
    for _ in range(300):
        expr = parse_filter(random_filter(rng), SCHEMA)
        seen_ops.add(type(expr).__name__ + ":" + expr.op)
        mask = table.mask(expr)
        assert mask.tolist() == [matches(expr, r) for r in rows]
        assert mask.tolist() == [matches(expr, table.attributes(i)) for i in range(len(rows))]
    assert {"Condition:eq", "Condition:in", "Condition:range", "Condition:exists", "Combined:and",
            "Combined:or", "Combined:not"} <= seen_ops


def test_operators_on_a_known_table():
    table = AttributeTable(SCHEMA, catalogue(5).assign(
        price=[10.0, 49.99, 50.0, None, 120.0], brand=["Makita", "Bosch", None, "Makita", "Ryobi"],
        in_stock=[True, False, None, True, True], tags=[["spring"], ["spring", "winter"], None, ["summer"], None]))

    def rows(expr):
        return np.flatnonzero(table.mask(parse_filter(expr, SCHEMA))).tolist()

    assert rows({"field": "price", "range": {"gte": 10, "lt": 50}}) == [0, 1]
    assert rows({"field": "price", "range": {"gt": 10, "lte": 50}}) == [1, 2]
    assert rows({"field": "brand", "eq": "Makita"}) == [0, 3]
    assert rows({"field": "brand", "in": ["Bosch", "Ryobi", "Nobody"]}) == [1, 4]
    assert rows({"field": "in_stock", "eq": False}) == [1]
    assert rows({"field": "tags", "eq": "spring"}) == [0, 1]
    assert rows({"field": "tags", "in": ["winter", "summer"]}) == [1, 3]
    assert rows({"field": "tags", "exists": False}) == [2, 4]
    assert rows({"field": "price", "exists": False}) == [3]
    assert rows({"not": {"field": "brand", "exists": True}}) == [2]
    assert rows({"and": [{"field": "brand", "eq": "Makita"}, {"field": "price", "range": {"lt": 100}}]}) == [0]
    assert rows({"or": [{"field": "brand", "eq": "Ryobi"}, {"field": "in_stock", "eq": False}]}) == [1, 4]


@pytest.mark.parametrize("expr, path, code", [
    ({"field": "colour", "eq": "red"}, "field", "unknown_field"),
    ({"and": [{"field": "brand", "eq": "x"}, {"field": "size", "eq": 1}]}, "and.1.field", "unknown_field"),
    ({"field": "brand", "range": {"gte": 1}}, "range", "wrong_type"),
    ({"field": "price", "eq": "cheap"}, "eq", "wrong_type"),
    ({"field": "price", "range": {"gte": True}}, "range.gte", "wrong_type"),
    ({"field": "price", "range": {"above": 3}}, "range", "wrong_type"),
    ({"field": "price", "range": {"gt": 1, "gte": 2}}, "range", "invalid_filter"),
    ({"field": "in_stock", "eq": "yes"}, "eq", "wrong_type"),
    ({"field": "brand", "in": []}, "in", "wrong_type"),
    ({"field": "brand", "in": ["a", 3]}, "in.1", "wrong_type"),
    ({"field": "brand", "in": ["x"] * 257}, "in", "too_large"),
    ({"field": "brand", "eq": "x" * 201}, "eq", "too_long"),
    ({"field": "brand", "eq": "x", "in": ["y"]}, "filter", "invalid_filter"),
    ({"field": "brand", "exists": "yes"}, "exists", "wrong_type"),
    ({"or": []}, "or", "wrong_type"),
    ({"and": [{"field": "brand", "eq": "x"}], "or": []}, "filter", "invalid_filter"),
    ({"brand": "Makita"}, "filter", "invalid_filter"),
    ([{"field": "brand", "eq": "x"}], "filter", "wrong_type"),
    ({"not": {"not": {"not": {"not": {"not": {"field": "brand", "eq": "x"}}}}}}, "not.not.not.not.not", "too_deep"),
    ({"or": [{"field": "brand", "eq": str(i)} for i in range(MAX_CONDITIONS + 1)]}, f"or.{MAX_CONDITIONS}",
     "too_large"),
])
def test_bad_filters_name_the_part_at_fault(expr, path, code):
    with pytest.raises(FilterError) as err:
        parse_filter(expr, SCHEMA)
    assert (err.value.path, err.value.code) == (path, code), err.value.message
    assert MAX_DEPTH == 4


def test_a_catalogue_without_attributes_says_so():
    with pytest.raises(FilterError, match="prepared without typed attributes"):
        parse_filter({"field": "brand", "eq": "x"}, {})


def unit_rows(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
@pytest.mark.parametrize("share", [0.5, 0.03, 0.002])
def test_every_planned_path_honours_the_filter_and_returns_k_when_k_match(kind, share):
    n, k = 5000, 10
    vectors = unit_rows(n)
    index = ProductIndex.build([f"p{i}" for i in range(n)], vectors, IndexConfig(kind=kind, nlist=64, nprobe=4,
                                                                                hnsw_m=8, ef_search=16))
    rng = np.random.default_rng(3)
    allowed = rng.random(n) < share
    queries = unit_rows(20, seed=9)
    exact = np.argsort(-(queries @ vectors[allowed].T), axis=1)[:, :k]
    truth = [{f"p{r}" for r in np.flatnonzero(allowed)[row]} for row in exact]
    for plan in ("auto", "exact", "ann", "post"):
        scores, ids, taken = index.search_within(queries, k, allowed, plan=plan)
        for row, want in zip(ids, truth):
            got = [p for p in row if p is not None]
            assert len(got) == min(k, allowed.sum()), (plan, taken)
            assert all(allowed[int(p[1:])] for p in got), (plan, taken)
            if taken.startswith("exact") or kind == "flat":
                assert set(got) == want, (plan, taken)
    assert index.search_within(queries, k, allowed)[2] == ("exact" if share < 0.05 else "ann")


def test_a_gpu_index_takes_the_post_filter_path_and_still_honours_the_filter():
    n = 3000
    vectors = unit_rows(n)
    index = ProductIndex.build([f"p{i}" for i in range(n)], vectors, IndexConfig(kind="flat"))
    index.manifest["on_gpu"] = True  # FAISS's GPU indexes ignore selectors: the planner must not rely on one
    allowed = np.zeros(n, dtype=bool)
    allowed[::500] = True  # 6 products: over-fetching 2k / share finds them all, or exact fills in
    _, ids, plan = index.search_within(unit_rows(4, seed=5), 10, allowed)
    assert plan.startswith("post")
    assert all(sorted(p for p in row if p) == sorted(f"p{i}" for i in range(0, n, 500)) for row in ids)


def hybrid_with_attributes(n: int = 400):
    frame = catalogue(n)
    titles = [f"{b or 'generic'} drill model {i} {' '.join(t or [])}" for i, (b, t) in
              enumerate(zip(frame["brand"], frame["tags"]))]
    vectors = unit_rows(n, seed=1)
    dense = ProductIndex.build(list(frame["product_id"]), vectors, IndexConfig(kind="flat"))
    return HybridIndex(dense, list(frame["product_id"]), titles, titles,
                       attributes=AttributeTable(SCHEMA, frame)), vectors, frame


@pytest.mark.parametrize("mode", ["hybrid", "dense", "lexical"])
def test_both_sides_honour_a_filter_and_give_k_when_k_match(mode):
    index, vectors, frame = hybrid_with_attributes()
    expr = parse_filter({"and": [{"field": "brand", "eq": "Makita"}, {"field": "in_stock", "eq": True}]}, SCHEMA)
    allowed = set(frame["product_id"][index.attributes.mask(expr)])
    assert len(allowed) >= 20
    stage = FirstStage(mode=mode, depth=30)
    hits = index.search(vectors[:3], ["Makita drill"] * 3, 20, stage, filters=[expr, None, expr])
    for row in (hits[0], hits[2]):
        assert {h["id"] for h in row} <= allowed
        if mode != "lexical":  # BM25 returns only products sharing a word: here all Makita drills do
            assert len(row) == 20
    assert len(hits[2]) == 20 and not {h["id"] for h in hits[1]} <= allowed  # the unfiltered query is not narrowed


def test_a_live_product_honours_filters_at_once_and_a_filter_matching_nothing_gives_nothing():
    index, vectors, frame = hybrid_with_attributes()
    stage = FirstStage(depth=50)
    only = parse_filter({"field": "brand", "eq": "Festool"}, SCHEMA)
    assert index.search(vectors[:1], ["drill"], 10, stage, filters=[only]) == [[]]
    index.upsert("new", "Festool drill model", "Festool drill model", vectors[7], {"brand": "Festool", "price": 99.0})
    assert [h["id"] for h in index.search(vectors[7:8], ["Festool drill"], 10, stage, filters=[only])[0]] == ["new"]
    cheap = parse_filter({"field": "price", "range": {"lt": 50}}, SCHEMA)
    assert "new" not in {h["id"] for h in index.search(vectors[7:8], ["Festool drill"], 10, stage, filters=[cheap])[0]}
    # a saved product changed through the API is filtered by its new attributes, never its old ones
    old = frame.index[frame["brand"] == "Makita"][0]
    index.upsert(f"p{old}", "now a Festool", "now a Festool", vectors[old], {"brand": "Festool"})
    makita = parse_filter({"field": "brand", "eq": "Makita"}, SCHEMA)
    assert f"p{old}" not in {h["id"] for h in index.search(vectors[old:old + 1], ["drill"], 100, stage,
                                                               filters=[makita])[0]}
    saved, live = index.allowed(only)
    assert int(saved.sum()) + len(live) == 2


def test_facets_count_values_and_buckets_and_bad_requests_name_the_part():
    from ranking.facets import count_facets, parse_facets

    request = parse_facets({"fields": ["brand", "tags", "in_stock"], "ranges": {"price": [50, 100]}, "depth": 5},
                           SCHEMA)
    hits = [{"attributes": a} for a in [
        {"brand": "Makita", "tags": ["spring", "summer"], "price": 10.0, "in_stock": True},
        {"brand": "Makita", "tags": ["spring"], "price": 50.0, "in_stock": False},
        {"brand": "Bosch", "price": 150.0}, {}]]
    counts = count_facets(hits, request)
    assert counts["brand"] == [{"value": "Makita", "count": 2}, {"value": "Bosch", "count": 1}]
    assert counts["tags"] == [{"value": "spring", "count": 2}, {"value": "summer", "count": 1}]
    assert counts["in_stock"] == [{"value": False, "count": 1}, {"value": True, "count": 1}]
    assert counts["price"] == [{"gte": None, "lt": 50.0, "count": 1}, {"gte": 50.0, "lt": 100.0, "count": 1},
                               {"gte": 100.0, "lt": None, "count": 1}]
    for spec, path, code in [({"fields": ["colour"]}, "fields.0", "unknown_field"),
                             ({"fields": ["price"]}, "fields.0", "wrong_type"),
                             ({"ranges": {"brand": [1]}}, "ranges.brand", "wrong_type"),
                             ({"ranges": {"price": [5, 5]}}, "ranges.price", "invalid_filter"),
                             ({"ranges": {"price": []}}, "ranges.price", "wrong_type"),
                             ({"depth": 0}, "depth", "out_of_range"),
                             ({"top": 3}, "top", "unknown_field")]:
        with pytest.raises(FilterError) as err:
            parse_facets(spec, SCHEMA)
        assert (err.value.path, err.value.code) == (path, code)


def test_rules_bury_boost_and_pin_in_order_and_say_so():
    from ranking.rules import apply_rules, parse_rule, pinned_ids

    hits = [{"id": f"p{i}", "attributes": {"brand": "Makita" if i in (0, 1) else "Bosch" if i == 6 else "Ryobi"}}
            for i in range(8)]
    rules = [parse_rule(r, SCHEMA) for r in [
        {"id": "no-makita", "action": "bury", "filter": {"field": "brand", "eq": "Makita"}},
        {"id": "bosch-up", "action": "boost", "filter": {"field": "brand", "eq": "Bosch"}, "by": 2},
        {"id": "hero", "action": "pin", "ids": ["p5"], "position": 1},
        {"id": "new-arrival", "action": "pin", "ids": ["fresh"], "position": 3, "query": "*drill*"},
        {"id": "jackets-only", "action": "pin", "ids": ["p7"], "position": 1, "query": "*jacket*"}]]
    fresh = {"id": "fresh", "attributes": {"brand": "Festool"}}
    assert pinned_ids(rules, "Cordless DRILL") == ["p5", "fresh"]
    out = apply_rules(hits, rules, "Cordless DRILL", pinned={"fresh": fresh})
    assert [h["id"] for h in out] == ["p5", "p2", "fresh", "p3", "p6", "p4", "p7", "p0", "p1"]
    why = {h["id"]: h.get("rules") for h in out}
    assert why["p5"] == ["pinned at 1 by rule 'hero'"] and why["fresh"] == ["pinned at 3 by rule 'new-arrival'"]
    assert why["p6"] == ["boosted by rule 'bosch-up'"] and why["p0"] == ["buried by rule 'no-makita'"]
    assert why["p2"] is None and hits[0].get("rules") is None  # the input is not changed
    assert [h["id"] for h in apply_rules(hits, rules[2:], "a lamp")] == ["p5", "p0", "p1", "p2", "p3", "p4", "p6",
                                                                        "p7"]
    for spec, path in [({"id": "x", "action": "shove", "ids": ["a"]}, "action"),
                       ({"id": "x", "action": "pin", "ids": ["a"], "filter": {"field": "brand", "eq": "b"}}, "ids"),
                       ({"id": "x", "action": "bury", "filter": {"field": "size", "eq": 1}}, "filter.field"),
                       ({"id": "a/b", "action": "pin", "ids": ["a"]}, "id"),
                       ({"id": "x", "action": "pin", "ids": ["a"], "position": 0}, "position"),
                       ({"id": "x", "action": "boost", "ids": ["a"], "by": 1000}, "by"),
                       ({"id": "x", "action": "boost", "ids": ["a"], "query": ""}, "query"),
                       ({"id": "x", "action": "boost", "ids": ["a"], "weight": 2}, "weight")]:
        with pytest.raises(FilterError) as err:
            parse_rule(spec, SCHEMA)
        assert err.value.path == path, spec


def test_without_a_filter_the_ranking_is_the_one_a_catalogue_without_attributes_gets():
    index, vectors, frame = hybrid_with_attributes()
    plain = HybridIndex(index.dense, list(frame["product_id"]), list(index.titles.values()),
                        list(index.texts.values()))
    stage = FirstStage(depth=40)
    texts = ["Makita drill spring", "generic drill model 7", "Bosch"]
    with_attrs = index.search(vectors[:3], texts, 20, stage)
    without = plain.search(vectors[:3], texts, 20, stage)
    assert [[(h["id"], h["score"]) for h in row] for row in with_attrs] == \
        [[(h["id"], h["score"]) for h in row] for row in without]
    assert with_attrs[0][0]["attributes"] == index.attributes_of(with_attrs[0][0]["id"])
    assert without[0][0]["attributes"] is None
