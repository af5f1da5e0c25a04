"""Several encoders served as one: `firstlight ensemble` (model/ensemble.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from common.errors import ConfigError
from model.ensemble import EnsembleConfig, run_ensemble
from model.runtime import EncoderRuntime

TEXTS = ["cordless drill 18v", "white vinyl fence post", "led light bulb 60w", "garden hose nozzle"]


@pytest.fixture(scope="module")
def ensemble_dir(tiny_model_dir, wide_model_dir, tmp_path_factory) -> Path:
    from firstlight.cli import main

    out = tmp_path_factory.mktemp("ensemble") / "model"
    assert main(["ensemble", "--models", f"{tiny_model_dir},{wide_model_dir}", "--weights", "1,3",
                 "--output_dir", str(out)]) == 0
    return out


def test_ensemble_vectors_are_the_weighted_members_and_score_their_mean_cosine(ensemble_dir, tiny_model_dir,
                                                                              wide_model_dir):
    from model.encoder import TextEncoder

    manifest = json.loads((ensemble_dir / "firstlight_ensemble.json").read_text())
    assert [m["weight"] for m in manifest["members"]] == [0.25, 0.75]
    assert [m["dim"] for m in manifest["members"]] == [32, 48]
    assert sorted(p.name for p in ensemble_dir.iterdir()) == ["firstlight_ensemble.json", "member-0", "member-1"]
    ensemble = TextEncoder.load(str(ensemble_dir))  # every stage loads its model this way
    small, wide = TextEncoder.load(str(tiny_model_dir)), TextEncoder.load(str(wide_model_dir))
    vectors = ensemble.encode(TEXTS)
    assert ensemble.dim == 80 and vectors.shape == (4, 80) and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, np.hstack([0.5 * small.encode(TEXTS), np.sqrt(0.75) * wide.encode(TEXTS)]),
                               atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    mean_cosine = 0.25 * small.encode(TEXTS) @ small.encode(TEXTS).T + 0.75 * wide.encode(TEXTS) @ wide.encode(TEXTS).T
    np.testing.assert_allclose(vectors @ vectors.T, mean_cosine, atol=1e-5)


def test_a_long_encode_logs_its_progress_member_by_member(ensemble_dir, caplog):
    import logging

    from model.encoder import TextEncoder

    with caplog.at_level(logging.INFO, logger="model.encoder"):
        TextEncoder.load(str(ensemble_dir)).encode(TEXTS * 10, batch_size=8, progress="mining")
    lines = [r.getMessage() for r in caplog.records if "texts encoded" in r.getMessage()]
    assert lines == [f"mining (member {m}/2): {n}/40 texts encoded" for m in (1, 2) for n in (8, 16, 24, 32, 40)]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, ray_session) -> Path:
    from data_pipeline.prepare import PrepareConfig, run_prepare

    return run_prepare(PrepareConfig(dataset="wands", data_dir=str(Path(__file__).parent / "fixtures" / "wands"),
                                     output_dir=str(tmp_path_factory.mktemp("ensemble_wands") / "data")))


def test_embed_and_index_take_an_ensemble_as_their_model(ensemble_dir, prepared, tmp_path):
    from data_pipeline.embed import (
        EmbedConfig,
        load_embeddings,
        model_fingerprint,
        run_embed,
    )
    from data_pipeline.index import IndexConfig, ProductIndex, run_index
    from data_pipeline.prepare import load_catalogue
    from model.encoder import TextEncoder

    emb = run_embed(
        EmbedConfig(
            prepared_dir=str(prepared),
            output_dir=str(tmp_path / "emb"),
            model=str(ensemble_dir),
            runtime=EncoderRuntime(backend="fp32"),
        )
    )  # compared with fp32 to 1e-5
    ids, vectors = load_embeddings(emb / "vectors")
    catalogue = load_catalogue(prepared).set_index("product_id")
    encoder = TextEncoder.load(str(ensemble_dir))
    assert vectors.shape == (len(catalogue), 80)
    np.testing.assert_allclose(vectors, encoder.encode(catalogue.loc[ids, "text"].tolist()), atol=1e-5)
    index = ProductIndex.load(run_index(IndexConfig(embeddings_dir=str(emb), output_dir=str(tmp_path / "index"))))
    query = encoder.encode(["a wooden chair"])
    _, found = index.search(query, 3)
    assert list(found[0]) == [ids[i] for i in np.argsort(-(vectors @ query[0]))[:3]]
    # the embedding cache knows the members' weights, which live in subfolders
    assert {"member-0/model.safetensors", "member-1/model.safetensors"} <= set(
        model_fingerprint(str(ensemble_dir))["weights"])


@pytest.mark.parametrize("overrides, field", [
    (dict(models=("MODEL",)), "models"),
    (dict(models=("MODEL", "no/such/folder")), "models"),
    (dict(models=("MODEL", "MODEL")), "models"),
    (dict(models=("MODEL", "ENSEMBLE")), "models"),
    (dict(weights=("1",)), "weights"),
    (dict(weights=("1", "-2")), "weights"),
    (dict(weights=("1", "half")), "weights"),
    (dict(output_dir=""), "output_dir"),
    (dict(output_dir="MODEL"), "output_dir"),
])
def test_bad_ensemble_input_names_the_field(overrides, field, tiny_model_dir, wide_model_dir, ensemble_dir, tmp_path):
    swap = {"MODEL": str(tiny_model_dir), "ENSEMBLE": str(ensemble_dir)}
    settings = dict(models=(str(tiny_model_dir), str(wide_model_dir)), output_dir=str(tmp_path / "out"))
    for key, value in overrides.items():
        settings[key] = tuple(swap.get(v, v) for v in value) if isinstance(value, tuple) else swap.get(value, value)
    with pytest.raises(ConfigError, match=field):
        run_ensemble(EnsembleConfig(**settings))
    assert not (tmp_path / "out").exists()


def test_an_ensemble_missing_a_member_or_asked_to_train_says_what_to_do(ensemble_dir, prepared, tmp_path):
    import shutil

    from model.encoder import TextEncoder
    from tests.test_train import tiny_config

    broken = tmp_path / "broken"
    shutil.copytree(ensemble_dir, broken)
    shutil.rmtree(broken / "member-1")
    with pytest.raises(ConfigError, match="lacks its member"):
        TextEncoder.load(str(broken))
    with pytest.raises(ConfigError, match="does not train further"):
        tiny_config(prepared, str(ensemble_dir), tmp_path / "train").validate()


def test_the_gateway_counts_an_ensembles_tokens_with_every_members_tokenizer(ensemble_dir, tiny_model_dir):
    """The server refuses over-long texts by token count; an ensemble has a tokenizer per member."""
    from types import SimpleNamespace

    from model.folders import tokenizer_folders
    from serve.api import ApiError
    from serve.gateway import Gateway

    assert tokenizer_folders(tiny_model_dir) == [tiny_model_dir]
    assert tokenizer_folders(ensemble_dir) == [ensemble_dir / "member-0", ensemble_dir / "member-1"]
    gateway = Gateway.func_or_class
    fake = SimpleNamespace(tokenizers={}, limits=SimpleNamespace(max_text_tokens=8))
    fake._tokenizer = lambda model: gateway._tokenizer(fake, model)
    assert len(fake._tokenizer(str(ensemble_dir))) == 2
    gateway._check_tokens(fake, str(ensemble_dir), ["cordless drill"], ["query"])  # 4 tokens with [CLS] / [SEP]
    with pytest.raises(ApiError) as err:
        gateway._check_tokens(fake, str(ensemble_dir), ["ok", "one two three four five six seven"], ["texts.0", "texts.1"])
    assert (err.value.status, err.value.code, err.value.field) == (422, "too_many_tokens", "texts.1")


@pytest.mark.serving
def test_the_server_answers_and_adds_items_with_an_ensemble(ensemble_dir, prepared, tmp_path):
    """`firstlight serve` over an ensemble's index: recommend, add a product (found at once, encoded by
    every member), and refuse a text too long for a member's tokenizer, all over real HTTP."""
    import requests

    from data_pipeline.index import ProductIndex
    from data_pipeline.prepare import load_catalogue
    from model.encoder import TextEncoder
    from tests.serving import served, small_app

    catalogue = load_catalogue(prepared)
    encoder = TextEncoder.load(str(ensemble_dir))
    ProductIndex.build(catalogue["product_id"].tolist(), encoder.encode(catalogue["text"].tolist()),
                       model=str(ensemble_dir)).save(tmp_path / "index")
    (tmp_path / "token").write_text("ensemble-token\n")
    cfg = small_app({"runtime.backend": "fp32",  # scores compared with fp32 to 1e-5
                     "index_dir": str(tmp_path / "index"), "prepared_dir": str(prepared),
                     "admin_token_file": str(tmp_path / "token"), "limits.max_text_tokens": 16,
                     "first_stage.spell_correct": False,
                     "first_stage.mode": "dense"})  # scores are then the ensemble's cosine similarities
    with served(cfg, name="firstlight-ensemble") as url:
        auth = {"Authorization": "Bearer ensemble-token"}
        title = catalogue["title"].iloc[3]
        reply = requests.post(url + "/v1/recommend", json={"text": title, "k": 3}, timeout=60)
        assert reply.status_code == 200, reply.text
        top = reply.json()["items"][0]
        # the ensemble's score: the weighted mean cosine of its members (80-dimensional joined vectors)
        expected = float(encoder.encode(title)[0] @ encoder.encode(catalogue["text"].iloc[3])[0])
        assert top["title"] == title and top["score"] == pytest.approx(expected, abs=1e-4)

        new = {"id": "ens-new-1", "title": "Solar garden gnome"}
        assert requests.post(url + "/v1/items", json={"items": [new]}, headers=auth, timeout=60).status_code == 200
        hits = requests.post(url + "/v1/recommend", json={"text": new["title"], "k": 3}, timeout=60).json()["items"]
        assert hits[0]["id"] == "ens-new-1" and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)

        long = requests.post(url + "/v1/recommend", json={"text": "drill " * 30}, timeout=60)
        assert long.status_code == 422 and long.json()["error"]["code"] == "too_many_tokens"
