"""Constraints read from shoppers' words: the price grammar, the catalogue vocabulary, and what the plan
makes of them (filters, boosts, relaxation, the request's own filter winning)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ranking.constraint_plan import (
    APPLIED,
    IGNORED,
    OVERRIDDEN,
    RELAXED,
    boosted,
    plan,
    without_excluded,
)
from ranking.constraints import ConstraintReader, ConstraintReading
from ranking.filters import parse_filter
from ranking.prices import read_number, read_prices
from ranking.session import matched_words
from ranking.tokens import LexicalTokenizer
from ranking.vocabulary import Vocabulary

ZH_DEMO = Path(__file__).resolve().parent.parent / "data_pipeline" / "datasets" / "zh-demo" / "products.csv"
SCHEMA = {"category": "keyword", "price": "number", "brand": "keyword", "in_stock": "boolean",
          "season": "keywords", "colour": "keyword"}


@pytest.fixture(scope="module")
def zh_reader() -> ConstraintReader:
    frame = pd.read_csv(ZH_DEMO, dtype=str)
    frame["season"] = frame["season"].fillna("").map(lambda s: [x for x in s.split("|") if x])
    return ConstraintReader(ConstraintReading(), SCHEMA, Vocabulary(SCHEMA, frame))


def keys(reader, text):
    return [(c.field, c.op, c.value) for c in reader.read(text)]


@pytest.mark.parametrize("text, expected", [
    ("我需要一件适合春游的外套，300元以内", ("lte", 300.0, "300元以内")),
    ("light jacket under $80", ("lte", 80.0, "under $80")),
    ("耳机 不超过200块", ("lte", 200.0, "不超过200块")),
    ("预算三百的背包", ("lte", 300.0, "预算三百")),
    ("两百五以下的鞋", ("lte", 250.0, "两百五以下")),
    ("$1,299 or less", ("lte", 1299.0, "$1,299 or less")),
    ("drill over $100", ("gte", 100.0, "over $100")),
    ("300元以上的外套", ("gte", 300.0, "300元以上")),
    ("tent between $50 and $120", ("between", (50.0, 120.0), "between $50 and $120")),
    ("茶叶 200到500元", ("between", (200.0, 500.0), "200到500元")),
    ("300元左右的外套", ("about", 300.0, "300元左右")),
    ("a coat around $300", ("about", 300.0, "around $300")),
])
def test_price_bounds_in_english_and_chinese(text, expected):
    (bound,) = read_prices(text.lower())
    assert (bound.op, bound.value, text[bound.start:bound.end]) == expected


@pytest.mark.parametrize("text", ["under cabinet light", "2-4 ft board", "under 5 lbs", "5米以内的数据线", "3天内发货",
                                  "vent cover 31", "toro power max 726", "under $-5", "under " + "9" * 10_000, "300" + "0" * 10_000 + "元以内",
                                  "about 5 ft", "iphone 15"])
def test_numbers_that_are_not_prices_are_not_read_as_prices(text):
    assert read_prices(text.lower()) == []


def test_numbers_as_shoppers_write_them():
    assert [read_number(t) for t in ("1,299", "1.5k", "三百", "两千五", "一万", "十", "9" * 13)] == \
           [1299.0, 1500.0, 300.0, 2500.0, 10000.0, 10.0, None]


def test_each_kind_is_read_in_both_languages(zh_reader):
    assert keys(zh_reader, "有货的蓝色连衣裙") == [("in_stock", "eq", True), ("colour", "eq", "蓝色"),
                                                 ("category", "eq", "连衣裙")]
    assert keys(zh_reader, "blue dress in stock") == [("colour", "eq", "蓝色"), ("in_stock", "eq", True)]
    assert keys(zh_reader, "李宁 T恤 200元以下") == [("brand", "eq", "李宁"), ("category", "eq", "T恤"),
                                                  ("price", "lte", 200.0)]
    assert keys(zh_reader, "我需要一件适合春游的外套") == [("season", "eq", "春"), ("category", "eq", "外套")]
    assert keys(zh_reader, "a tent for summer, not black") == [("season", "eq", "夏"), ("colour", "not", "黑色")]
    assert keys(zh_reader, "不要皮的外套") == [("text", "not_contains", "皮"), ("category", "eq", "外套")]
    assert keys(zh_reader, "yoga mat without latex") == [("text", "not_contains", "latex")]


def test_spans_point_at_the_words_in_the_text(zh_reader):
    text = "我需要一件适合春游的外套，300元以内"
    price = [c for c in zh_reader.read(text) if c.field == "price"][0]
    assert text[price.span[0]:price.span[1]] == price.text == "300元以内" and price.hard
    colour = zh_reader.read("Blue dress")[0]
    assert colour.text == "Blue" and colour.span == (0, 4) and not colour.hard


def test_a_word_that_is_not_a_value_is_not_a_constraint(zh_reader):
    assert keys(zh_reader, "smart watch 运动 心率") == []  # a top-level category ("运动") is too broad
    assert keys(zh_reader, "not too expensive") == []


def test_hard_constraints_filter_and_soft_ones_boost(zh_reader):
    p = plan(zh_reader.read("有货的蓝色连衣裙 300元以内"), SCHEMA, ConstraintReading())
    assert [(x.constraint.field, x.constraint.hard, x.status) for x in p.items] == [
        ("in_stock", True, APPLIED), ("colour", False, APPLIED), ("category", False, APPLIED), ("price", True, APPLIED)]
    assert p.filter().describe() == "(in_stock = True) and (price <= 300)"
    hits = [{"id": "a", "attributes": {"colour": "红色", "category": "服装/裙装/连衣裙"}},
            {"id": "b", "attributes": {"colour": "黑色"}},
            {"id": "c", "attributes": {"colour": "蓝色", "category": "服装/裙装/连衣裙"}}]
    assert [h["id"] for h in boosted(hits, p, 5)] == ["c", "a", "b"]  # both soft met, then one
    assert [h["id"] for h in boosted(hits, p, 0)] == ["a", "b", "c"]
    assert p.satisfied({"attributes": {"price": 200, "in_stock": True, "colour": "蓝色"}}) == [
        "in_stock", "colour = 蓝色", "price ≤ 300"]


def test_the_least_certain_hard_constraint_is_relaxed_first(zh_reader):
    p = plan(zh_reader.read("李宁 有货 不要皮的 100元以内"), SCHEMA, ConstraintReading())
    order = []
    while p.relaxable():
        p = p.relaxed()
        order.append(next(x.constraint.field for x in p.items if x.status == RELAXED and x.constraint.field not in
                          order))
    # a negated word (0.6), then the brand (0.8), the price (0.9), stock (0.95)
    assert order == ["text", "brand", "price", "in_stock"]
    assert p.filter() is None and all(x["status"] == "relaxed" for x in p.public())


def test_two_brands_named_are_either(zh_reader):
    p = plan(zh_reader.read("李宁或者安踏的运动鞋 300元以内"), SCHEMA, ConstraintReading())
    assert p.filter().describe() == "(price <= 300) and ((brand in (李宁)) or (brand in (安踏)))"


def test_an_explicit_filter_overrides_a_read_constraint_on_its_field(zh_reader):
    explicit = parse_filter({"field": "price", "range": {"lte": 100}}, SCHEMA)
    p = plan(zh_reader.read("李宁 300元以内"), SCHEMA, ConstraintReading(), explicit)
    assert [(x.constraint.field, x.status) for x in p.items] == [("brand", APPLIED), ("price", OVERRIDDEN)]
    assert p.filter().describe() == "(price <= 100) and (brand in (李宁))"


def test_a_constraint_on_an_attribute_the_catalogue_lacks_is_ignored_and_said_so():
    reader = ConstraintReader(ConstraintReading(), {"brand": "keyword"})
    p = plan(reader.read("makita drill under $100 in stock"), {"brand": "keyword"}, ConstraintReading())
    assert [(x.constraint.field, x.status) for x in p.items] == [("price", IGNORED), ("in_stock", IGNORED)]
    assert "no 'price' attribute" in p.public()[0]["reason"] and p.filter() is None


def test_excluded_words_compare_as_bm25_compares_them():
    tokens = LexicalTokenizer()
    hits = [{"id": "1", "text": "Makita 18V Corded Drill"}, {"id": "2", "text": "Makita 18V Cordless Drill"},
            {"id": "3", "text": "真皮 短款 外套"}, {"id": "4", "text": "防风 外套"}]
    assert [h["id"] for h in without_excluded(hits, ["corded"], tokens)] == ["2", "3", "4"]
    assert [h["id"] for h in without_excluded(hits, ["皮"], tokens)] == ["1", "2", "4"]


def test_why_names_the_chinese_words_that_matched():
    tokens = LexicalTokenizer()
    assert matched_words("我需要一件适合春游的外套", "轻薄防风夹克 男款 春游出行 外套", tokens) == ["春游", "外套"]
    assert matched_words("iPhone 手机壳", "苹果 iPhone 15 手机壳", tokens) == ["iphone", "手机壳"]
    assert matched_words("light jackets", "Light Jacket", tokens) == ["light", "jackets"]


def test_latin_brand_names_that_are_ordinary_words_are_not_read_as_brands():
    frame = pd.DataFrame({"title": ["Delta faucet", "Delta shower", "Power drill kit", "Power washer hose",
                                    "Ryobi power drill", "Acme power saw"],
                          "brand": ["Delta", "Delta", "Power", None, "Ryobi", "Acme"]})
    reader = ConstraintReader(ConstraintReading(), {"brand": "keyword"}, Vocabulary({"brand": "keyword"}, frame))
    assert keys(reader, "delta faucet") == [("brand", "eq", "Delta")]
    assert keys(reader, "power drill") == []  # "power" is in 4 titles, the brand of 1
    assert keys(reader, "ryobi drill, not corded") == [("brand", "eq", "Ryobi"), ("text", "not_contains", "corded")]
    assert keys(reader, "not Ryobi") == [("brand", "not", "Ryobi")]


def test_reading_settings_are_checked():
    with pytest.raises(Exception, match="soft_boost"):
        ConstraintReading(soft_boost=-1).validate()


def test_constraint_settings_have_one_home_in_serve_and_evaluate():
    from evaluation.evaluate import EvalConfig
    from serve.config import ServeConfig

    cfg = ServeConfig.from_args({"index_dir": "x", "constraints": {"hard_fields": "brand,colour", "soft_boost": "3"}})
    assert cfg.constraints.hard_fields == ("brand", "colour") and cfg.constraints.soft_boost == 3
    # evaluate scores the text as typed unless told to read it as the server does
    assert EvalConfig().constraints == ConstraintReading(read=False) and ServeConfig().constraints.read


def test_hostile_texts_are_read_in_linear_time_and_bounded(zh_reader):
    import time

    from ranking.constraints import MAX_CONSTRAINTS

    for text in ["under " + "9" * 1000, "一" * 1000 + "元以内", "不要" * 500, "三百元以内 " * 150, "not " * 250]:
        start = time.perf_counter()
        found = zh_reader.read(text)
        assert time.perf_counter() - start < 0.5 and len(found) <= MAX_CONSTRAINTS
    assert len(zh_reader.read("三百元以内 " * 150)) == MAX_CONSTRAINTS
