"""Few or no labels: pseudo-queries from the catalogue (seeded, deterministic), the label budget (drawn by
query), and label-free training that reads no judgments file."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from data_pipeline.synthesize import (
    Generate,
    attributes_query,
    document_frequencies,
    rng_for,
    span_query,
)
from train.settings import TrainData

CATALOGUE = pd.DataFrame({
    "product_id": ["1", "2", "3", "4"],
    "title": ["Milwaukee M18 18-Volt Lithium-Ion Cordless Drill with Battery", "Kohler Cimarron Round Toilet Seat",
              "女士中长款风衣 春季新款 卡其色", "BEHR Premium 1 gal. Deck Stain, Tugboat"],
    "brand": ["Milwaukee", "Kohler", "李宁", None],
    "category": [None, None, "服装/外套/夹克风衣", None],
    "colour": [None, None, "卡其色", None],
    "season": [None, None, ["春"], None],
})


def generated(seed: int) -> pd.DataFrame:
    frequency = document_frequencies(CATALOGUE["title"])
    return Generate(("span", "keywords", "attributes"), seed, frequency, len(CATALOGUE))(CATALOGUE)


def test_pseudo_queries_are_deterministic_with_a_seed_and_short_like_real_queries():
    first, again, other = generated(7), generated(7), generated(8)
    assert first.equals(again)
    assert not first.equals(other)
    assert set(first["generator"]) == {"span", "keywords", "attributes"}
    english = first[~first["product_id"].eq("3")]
    assert english["query"].str.split().str.len().between(1, 4).all()
    for row in english.itertuples():  # every word comes from the product's title (or its brand)
        title = CATALOGUE.set_index("product_id").loc[row.product_id, "title"].lower()
        assert all(word in title for word in row.query.split()), row
    # the main clause ends before "with": a span ending there names the drill, never the battery alone
    drill = [span_query(CATALOGUE["title"][0], rng_for(s, "1", "span")) for s in range(40)]
    assert any(q.endswith("drill") for q in drill) and not any(q == "battery" for q in drill)


def test_chinese_titles_and_attribute_templates():
    row = CATALOGUE.iloc[2].to_dict()
    spans = {span_query(row["title"], rng_for(s, "3", "span")) for s in range(30)}
    assert spans and all(q.replace(" ", "") and q in row["title"] for q in spans)
    templated = {attributes_query(row, rng_for(s, "3", "attributes")) for s in range(30)}
    assert templated <= {"李宁 夹克风衣", "卡其色夹克风衣", "春季夹克风衣"} and len(templated) == 3
    assert attributes_query({"title": "Deck Stain"}, rng_for(0, "x", "attributes")) == ""  # nothing to fill in


def test_the_label_budget_samples_whole_queries_with_a_seed():
    judgments = pd.DataFrame({"query": [f"q{i // 3}" for i in range(300)], "product_id": [str(i) for i in range(300)],
                              "relevance": 3.0})
    data = TrainData(max_queries=10)
    first, again = data.budgeted(judgments, seed=1), data.budgeted(judgments, seed=1)
    assert first.equals(again) and not first.equals(data.budgeted(judgments, seed=2))
    assert first["query"].nunique() == 10 and len(first) == 30  # every judgment of each drawn query
    assert TrainData(max_queries=0).budgeted(judgments, 1) is judgments
    assert len(TrainData(max_queries=10_000).budgeted(judgments, 1)) == 300


@pytest.mark.training
def test_label_free_training_reads_no_judgments_file(small_homedepot, tiny_model_dir, ray_session, tmp_path,
                                                     monkeypatch):
    """synthesize -> train --pairs synthetic from a prepared folder whose judgments are gone; any read of
    a split fails the test."""
    from data_pipeline.embed import EmbedConfig, run_embed
    from data_pipeline.index import IndexConfig, run_index
    from data_pipeline.prepare import PrepareConfig, run_prepare
    from tests.test_train import tiny_config
    from train import pairs, validation
    from train.driver import run_train
    from train.synthetic_pairs import (
        SynthesizeConfig,
        generate,
        load_synthetic,
        run_synthesize,
    )

    prepared = run_prepare(PrepareConfig(dataset="homedepot", data_dir=str(small_homedepot),
                                         output_dir=str(tmp_path / "data")))
    emb = run_embed(EmbedConfig(prepared_dir=str(prepared), output_dir=str(tmp_path / "embeddings"),
                                model=str(tiny_model_dir)))
    run_index(IndexConfig(embeddings_dir=str(emb), output_dir=str(tmp_path / "index")))
    shutil.rmtree(Path(prepared) / "judgments")

    def no_labels(*args, **kwargs):
        raise AssertionError("label-free training read a judgments split")

    monkeypatch.setattr(pairs, "load_split", no_labels)
    monkeypatch.setattr(validation, "load_split", no_labels)
    # through Ray Data the same queries as in one process; list attributes with gaps (season) included
    through_ray = generate(SynthesizeConfig(prepared_dir=str(prepared), seed=7), CATALOGUE)
    in_process = generated(7).sort_values(["product_id", "generator"]).reset_index(drop=True)
    assert through_ray.astype(str).values.tolist() == in_process.astype(str).values.tolist()
    cfg = SynthesizeConfig(prepared_dir=str(prepared), max_products=400, val_share=0.1, agree_depth=30)
    out = run_synthesize(cfg)
    synthetic = load_synthetic(out)
    assert len(synthetic) > 50 and set(synthetic["split"]) == {"train", "val"}
    assert not set(synthetic.loc[synthetic["split"] == "val", "query"]) & set(
        synthetic.loc[synthetic["split"] == "train", "query"])  # held out by query
    assert synthetic["negative_id"].ne(synthetic["product_id"]).all()
    assert load_synthetic(run_synthesize(cfg)).equals(synthetic)  # the same seed: the same pairs (reused)

    model = run_train(tiny_config(prepared, tiny_model_dir, tmp_path / "train", pairs="synthetic", max_steps=2,
                                  checkpoint_every=2))
    assert (Path(model) / "model.safetensors").exists()


def test_synthetic_training_settings_name_their_fix(tmp_path):
    from common.errors import ConfigError
    from train.config import TrainConfig
    from train.synthetic_pairs import SynthesizeConfig

    (tmp_path / "data" / "catalogue").mkdir(parents=True)
    prepared = str(tmp_path / "data")
    with pytest.raises(ConfigError, match="synthetic_dir.*firstlight synthesize"):
        TrainConfig(prepared_dir=prepared, pairs="synthetic").validate()
    with pytest.raises(ConfigError, match="'pairs'"):
        TrainConfig(prepared_dir=prepared, pairs="made-up").validate_settings()
    with pytest.raises(ConfigError, match="two sources"):
        TrainConfig(prepared_dir=prepared, pairs="synthetic", events=str(tmp_path)).validate_settings()
    with pytest.raises(ConfigError, match="generators"):
        SynthesizeConfig(prepared_dir=prepared, generators="span,poems").validate()
    with pytest.raises(ConfigError, match="index_dir.*firstlight index"):
        SynthesizeConfig(prepared_dir=prepared).validate()
