"""The split is by query (never by row), deterministic, and identical across runs."""

import pandas as pd

from common.text import normalize_text
from data_pipeline.prepare import (
    PrepareConfig,
    load_split,
    prepared_manifest,
    run_prepare,
)
from data_pipeline.split import SPLITS, split_of


def splits_of(folder):
    return {s: load_split(folder, s) for s in SPLITS}


def test_no_query_lands_in_two_splits_and_no_row_is_lost(small_homedepot, tmp_path, ray_session):
    out = run_prepare(PrepareConfig(dataset="homedepot", data_dir=str(small_homedepot),
                                    output_dir=str(tmp_path / "a"), val_fraction=0.2, test_fraction=0.2))
    parts = splits_of(out)
    queries = {s: set(df["query"]) for s, df in parts.items()}
    assert not queries["train"] & queries["val"]
    assert not queries["train"] & queries["test"]
    assert not queries["val"] & queries["test"]
    raw = pd.read_csv(small_homedepot / "judgments.csv")
    assert sum(len(df) for df in parts.values()) == len(raw)
    assert set().union(*queries.values()) == {normalize_text(q) for q in raw["search_term"]}
    n = len(queries["train"] | queries["val"] | queries["test"])
    assert 0.1 * n < len(queries["test"]) < 0.3 * n  # 300 queries, 20% expected
    manifest = prepared_manifest(out)
    assert manifest["counts"]["test"]["queries"] == len(queries["test"])
    assert manifest["inputs_key"]["seed"] == 2026
    assert len(manifest["inputs_key"]["inputs"][0]["sha256"]) == 64


def test_split_is_identical_across_runs_and_changes_with_the_seed(small_homedepot, tmp_path, ray_session):
    runs = [run_prepare(PrepareConfig(dataset="homedepot", data_dir=str(small_homedepot),
                                      output_dir=str(tmp_path / name), seed=seed))
            for name, seed in (("one", 7), ("two", 7), ("other", 8))]
    first, second, other = (prepared_manifest(r)["counts"] for r in runs)
    for s in SPLITS:
        assert first[s] == second[s]
        assert set(load_split(runs[0], s)["query"]) == set(load_split(runs[1], s)["query"])
    assert first["test"]["query_set_sha256"] != other["test"]["query_set_sha256"]


def test_a_query_keeps_its_split_whatever_else_is_in_the_data():
    assert split_of("deck over", 1, 0.1, 0.1) == split_of("deck over", 1, 0.1, 0.1)
    shares = pd.Series([split_of(f"query {i}", 1, 0.1, 0.1) for i in range(5000)]).value_counts(normalize=True)
    assert abs(shares["test"] - 0.1) < 0.02 and abs(shares["val"] - 0.1) < 0.02


def test_prepare_reuses_an_up_to_date_folder(small_homedepot, tmp_path, ray_session):
    cfg = PrepareConfig(dataset="homedepot", data_dir=str(small_homedepot), output_dir=str(tmp_path / "p"))
    out = run_prepare(cfg)
    stamp = (out / "manifest.json").stat().st_mtime_ns
    assert run_prepare(cfg) == out
    assert (out / "manifest.json").stat().st_mtime_ns == stamp
