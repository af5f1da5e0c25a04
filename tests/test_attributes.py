"""Typed attributes: declared or inferred with a report, stored as typed columns by prepare; the
brand read off Home Depot titles; zh-demo's attributes."""

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from common.errors import ConfigError
from data_pipeline.attributes import (
    infer_type,
    parse_fields,
    read_boolean,
    read_number,
    resolve,
)
from data_pipeline.brands import derive_brands
from data_pipeline.prepare import PrepareConfig, catalogue_schema, run_prepare


def test_fields_are_declared_with_optional_types_and_columns():
    fields = parse_fields(["price:number", "brand", "colour=color_name:keyword"])
    assert [(f.name, f.type, f.source) for f in fields] == [("price", "number", "price"), ("brand", None, "brand"),
                                                           ("colour", "keyword", "color_name")]
    for bad, fix in [("price:money", "unknown type"), ("title", "not a usable field name"),
                     ("9lives", "not a usable field name")]:
        with pytest.raises(ConfigError, match=fix):
            parse_fields([bad])
    with pytest.raises(ConfigError, match="named twice"):
        parse_fields(["a", "a:number"])


def test_values_read_as_their_types_and_types_are_inferred():
    assert [read_number(v) for v in ["$1,299.00", "¥299", "299元", "12.5", "n/a", "", "inf"]] == \
        [1299.0, 299.0, 299.0, 12.5, None, None, None]
    assert [read_boolean(v) for v in ["yes", "FALSE", "有货", "0", "maybe"]] == [True, False, True, False, None]
    assert infer_type(["yes", "no", ""]) == "boolean"
    assert infer_type(["0", "1"]) == "number"  # 0/1 reads as a count unless declared boolean
    assert infer_type(["12", "$3.50"]) == "number"
    assert infer_type(["spring|summer", "winter"]) == "keywords"
    assert infer_type(["Makita", "12"]) == "keyword"


def test_unreadable_values_are_left_empty_and_counted():
    fields, reports = resolve(parse_fields(["price:number", "rating"]),
                              {"price": ["10", "ten", "", "12"], "rating": ["4.5", "n/a", "3"]})
    assert [f.type for f in fields] == ["number", "keyword"]  # one "n/a" makes rating a keyword: reported
    assert (reports[0].unreadable, reports[0].filled, reports[0].examples) == (1, 2, ["ten"])
    assert reports[1].inferred and "inferred" in reports[1].line()


def test_brands_are_read_off_leading_title_words():
    titles = (["Hampton Bay 3-Light Fan"] * 6 + ["Hampton Bay Ceiling Fan 52 in."] * 2
              + ["Home Decorators Collection Oak Shelf"] * 6 + ["KOHLER Archer 6 ft. Tub", "KOHLER Devonshire Faucet",
                                                                "KOHLER 2-Handle Faucet"] * 3
              + ["White 1/2 in. Pipe"] * 3 + ["Oak 2 in. Dowel"] * 6 + ["Shelf Bracket in White Oak"] * 4)
    brands = derive_brands(titles)
    assert set(brands[:8]) == {"Hampton Bay"}
    assert set(brands[8:14]) == {"Home Decorators Collection"}
    assert set(brands[14:23]) == {"KOHLER"}  # product lines (Archer, Devonshire) are not brands
    assert brands[23:] == [None] * 13  # "White" and "Oak" lead too few titles, or stand elsewhere too


@pytest.mark.usefixtures("ray_session")
def test_prepare_stores_typed_columns_and_reports_inference(tmp_path):
    pd.DataFrame({"sku": ["a", "b", "c", "d"], "name": ["Red Chair", "Blue Chair", "Oak Table", "Lamp &amp; Shade"],
                  "price": ["$10", "12.5", "oops", ""], "in_stock": ["yes", "no", "yes", "yes"],
                  "tags": ["kitchen|sale", "kitchen", "", "living"]}).to_csv(tmp_path / "c.csv", index=False)
    pd.DataFrame({"query": ["chair", "table", "lamp"], "sku": ["a", "c", "d"], "relevance": [3, 3, 3]}).to_csv(
        tmp_path / "j.csv", index=False)
    out = run_prepare(PrepareConfig(dataset="files", catalogue=str(tmp_path / "c.csv"),
                                    judgments=str(tmp_path / "j.csv"), product_id_column="sku", title_column="name",
                                    attributes=["price:number", "in_stock", "tags"], test_fraction=0.34,
                                    output_dir=str(tmp_path / "out")))
    assert catalogue_schema(out) == {"price": "number", "in_stock": "boolean", "tags": "keywords"}
    table = pq.read_table(out / "catalogue").to_pandas().sort_values("product_id")
    assert table["price"].tolist()[:2] == [10.0, 12.5] and table["price"].isna().tolist()[2:] == [True, True]
    assert table["in_stock"].tolist() == [True, False, True, True]
    assert [list(t) if t is not None else None for t in table["tags"]] == [["kitchen", "sale"], ["kitchen"], None,
                                                                           ["living"]]
    assert table["title"].tolist()[3] == "Lamp & Shade"  # HTML entities read once, for every stage
    report = json.loads((out / "manifest.json").read_text())["reports"]["attributes"]
    assert [(r["name"], r["inferred"], r["unreadable"]) for r in report] == [("price", False, 1), ("in_stock", True, 0),
                                                                             ("tags", True, 0)]


@pytest.mark.usefixtures("ray_session")
def test_zh_demo_carries_price_brand_stock_and_season(tmp_path):
    out = run_prepare(PrepareConfig(dataset="zh-demo", output_dir=str(tmp_path / "zh")))
    assert catalogue_schema(out) == {"category": "keyword", "price": "number", "brand": "keyword",
                                     "in_stock": "boolean", "season": "keywords", "colour": "keyword"}
    table = pq.read_table(out / "catalogue").to_pandas()
    jackets = table[table["category"] == "服装/外套/夹克风衣"]
    assert len(jackets) == 16 and jackets["price"].between(129, 459).all() and (jackets["price"] <= 300).sum() >= 5
    assert table["brand"].notna().all() and table["in_stock"].notna().all() and (~table["in_stock"]).sum() > 10
    assert "春" in set(sum((list(s) for s in table["season"] if s is not None), []))
    assert table["text"].str.contains("price").sum() == 0  # new fields are for filters; the text is as it was
