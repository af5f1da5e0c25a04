"""Bad input files fail with a message naming the file, the row or column, and the fix, or are
skipped with a count where skipping is right. Driven through the CLI, as a user meets them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from common.errors import DataError
from data_pipeline.readers import (
    CatalogueSpec,
    JudgmentSpec,
    check_catalogue,
    check_judgments,
)
from firstlight.cli import main


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


@pytest.fixture()
def good(tmp_path):
    cat = write(tmp_path / "catalogue.csv", "product_id,title\np1,Oak chair\np2,Pine table\np3,Brass lamp\n")
    judg = write(tmp_path / "judgments.csv", "query,product_id,relevance\nchair,p1,3\ntable,p2,2.5\nlamp,p3,1\n")
    return cat, judg


def run_prepare_cli(tmp_path, cat, judg, capsys, *extra):
    code = main(["prepare", "--dataset", "files", "--catalogue", str(cat), "--judgments", str(judg),
                 "--output_dir", str(tmp_path / "out"), "--num_cpus", "2", *extra])
    return code, capsys.readouterr().err


def expect_error(tmp_path, cat, judg, capsys, *fragments, extra=()):
    code, err = run_prepare_cli(tmp_path, cat, judg, capsys, *extra)
    assert code == 2, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in {err!r}"
    return err


def test_catalogue_without_required_column(tmp_path, good, capsys, ray_session):
    cat = write(tmp_path / "cat.csv", "sku,title\np1,Oak chair\n")
    expect_error(tmp_path, cat, good[1], capsys, str(cat), "no column 'product_id'", "'sku'",
                 "--product_id_column")


def test_column_mapping_fixes_a_renamed_column(tmp_path, good, capsys, ray_session):
    cat = write(tmp_path / "cat.csv", "sku,name\np1,Oak chair\np2,Pine table\np3,Brass lamp\n")
    code, err = run_prepare_cli(tmp_path, cat, good[1], capsys, "--product_id_column", "sku",
                                "--title_column", "name", "--judgments_product_id_column", "product_id")
    assert code == 0, err
    out = pd.read_parquet(tmp_path / "out" / "catalogue")
    assert sorted(out["product_id"]) == ["p1", "p2", "p3"]


def test_empty_file(tmp_path, good, capsys, ray_session):
    cat = write(tmp_path / "cat.csv", "")
    expect_error(tmp_path, cat, good[1], capsys, str(cat), "catalogue file is empty", "Fix:")


def test_header_without_rows(tmp_path, good, capsys, ray_session):
    judg = write(tmp_path / "j.csv", "query,product_id,relevance\n")
    expect_error(tmp_path, good[0], judg, capsys, str(judg), "header but no rows")


def test_missing_file(tmp_path, good, capsys, ray_session):
    expect_error(tmp_path, tmp_path / "nope.csv", good[1], capsys, "nope.csv", "does not exist")


def test_non_utf8_bytes_name_line_and_fix(tmp_path, good, capsys, ray_session):
    cat = write(tmp_path / "cat.csv", b"product_id,title\np1,Oak chair\np2,Caf\xe9 table\n")
    expect_error(tmp_path, cat, good[1], capsys, str(cat), "line 3", "not valid UTF-8", "iconv")


def test_duplicate_product_ids(tmp_path, good, capsys, ray_session):
    cat = write(tmp_path / "cat.csv", "product_id,title\np1,Oak chair\np2,Pine table\np1,Other chair\n")
    expect_error(tmp_path, cat, good[1], capsys, str(cat), "more than once", "'p1'", "row 1 (line 2)",
                 "row 3 (line 4)", "make product ids unique")


def test_relevance_that_is_not_a_number(tmp_path, good, capsys, ray_session):
    judg = write(tmp_path / "j.csv", "query,product_id,relevance\nchair,p1,3\ntable,p2,high\n")
    expect_error(tmp_path, good[0], judg, capsys, str(judg), "'high'", "row 2 (line 3)", "1 (irrelevant)")


def test_unknown_products_are_skipped_and_counted(tmp_path, good, ray_session):
    cat, _ = good
    judg = write(tmp_path / "j.csv", "query,product_id,relevance\nchair,p1,3\ntable,p2,2\nlamp,p3,3\nsofa,p9,3\n")
    ids, _ = check_catalogue(CatalogueSpec(str(cat)))
    report = check_judgments(JudgmentSpec(str(judg)), ids, None)
    assert report.rows == 4 and report.kept == 3
    assert report.skipped == {"product id not in the catalogue": 1}


def test_judgments_mostly_naming_unknown_products_is_an_error(tmp_path, good, capsys, ray_session):
    judg = write(tmp_path / "j.csv", "query,product_id,relevance\nchair,x1,3\ntable,x2,2\nlamp,p3,3\n")
    expect_error(tmp_path, good[0], judg, capsys, str(judg), "2 of 3 judgments", "'x1'",
                 "same ids as the catalogue")


def test_empty_titles_are_skipped_and_counted(tmp_path):
    cat = write(tmp_path / "cat.csv", 'product_id,title\np1,Oak chair\np2,"   "\n,Nameless\n')
    ids, report = check_catalogue(CatalogueSpec(str(cat)))
    assert ids == frozenset({"p1"})
    assert report.skipped == {"empty 'product_id'": 1, "empty 'title'": 1}


def test_malformed_row_is_named(tmp_path):
    cat = write(tmp_path / "cat.csv", "product_id,title\np1,Oak chair\np2,Pine,table,extra\n")
    with pytest.raises(DataError, match="could not be parsed") as err:
        check_catalogue(CatalogueSpec(str(cat)))
    assert str(cat) in str(err.value)


def test_bad_config_is_named_before_any_work(tmp_path, good, capsys):
    code = main(["prepare", "--dataset", "files", "--catalogue", str(good[0]), "--judgments", str(good[1]),
                 "--test_fraction", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "test_fraction" in err and "Fix:" in err
