"""The Ray Data embedding pipeline gives the encoder module's vectors, for every product."""

import shutil

import numpy as np
import pandas as pd
import pytest
import ray
import torch
from transformers import AutoModel

from common.errors import ConfigError
from data_pipeline.embed import (
    Actors,
    EmbedConfig,
    embed_dataset,
    load_embeddings,
    run_embed,
)
from data_pipeline.prepare import PrepareConfig, run_prepare
from model.encoder import TextEncoder
from model.runtime import EncoderRuntime


def test_ray_data_pipeline_matches_encoder_module(ray_session):
    """Real all-MiniLM-L6-v2 over real-looking titles, with Unicode and messy whitespace."""
    texts = ["Simpson Strong-Tie 12-Gauge Angle", "BEHR Premium Textured DeckOver 1-gal.",
             "  light   jacket\tfor a spring outing ", "轻便夹克", "🧥 rain coat", "x"] * 5
    ds = ray.data.from_pandas(pd.DataFrame({"product_id": [f"p{i}" for i in range(len(texts))], "text": texts}))
    out = embed_dataset(
        ds, EmbedConfig(batch_size=8, runtime=EncoderRuntime(product_max_length=32, backend="fp32"))
    ).to_pandas()
    by_id = dict(zip(out["product_id"], out["embedding"]))
    pipeline = np.stack([np.asarray(by_id[f"p{i}"], dtype=np.float32) for i in range(len(texts))])
    direct = TextEncoder.load(max_length=32).encode(texts)
    assert pipeline.shape == (len(texts), 384)
    np.testing.assert_allclose(pipeline, direct, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(pipeline, axis=1), 1.0, atol=1e-5)
    # the default backend (int8 on a CPU) computes nearly the same vectors
    default = np.stack(
        embed_dataset(ds, EmbedConfig(batch_size=8, runtime=EncoderRuntime(product_max_length=32)))
        .to_pandas()
        .set_index("product_id")
        .loc[[f"p{i}" for i in range(len(texts))], "embedding"]
        .to_numpy()
    )
    cosine = (default * direct).sum(axis=1)
    assert cosine.min() > 0.9 and cosine.mean() > 0.97
    # whitespace variants are one text after normalisation
    np.testing.assert_allclose(direct[2], TextEncoder.load(max_length=32).encode("light jacket for a spring outing")[0],
                               atol=1e-6)


def test_embed_stage_writes_every_product_once(small_homedepot, tiny_model_dir, tmp_path, ray_session,
                                               monkeypatch):
    prepared = run_prepare(PrepareConfig(dataset="homedepot", data_dir=str(small_homedepot),
                                         output_dir=str(tmp_path / "data")))
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)  # a copy: its weights are rewritten below
    out = run_embed(
        EmbedConfig(
            prepared_dir=str(prepared), model=str(model), batch_size=128, runtime=EncoderRuntime(backend="fp32")
        )
    )
    ids, vectors = load_embeddings(out / "vectors")
    catalogue = pd.read_parquet(prepared / "catalogue")
    assert sorted(ids) == sorted(catalogue["product_id"]) and len(set(ids)) == len(ids)
    assert vectors.shape == (len(catalogue), 32) and vectors.dtype == np.float32
    encoder = TextEncoder.load(str(tiny_model_dir))
    row = catalogue.set_index("product_id").loc[ids[:5], "text"].tolist()
    np.testing.assert_allclose(vectors[:5], encoder.encode(row), atol=1e-5)

    # The same folder by a relative path is the same model: the finished vectors are reused.
    written = (out / "manifest.json").stat().st_mtime_ns
    monkeypatch.chdir(tmp_path)
    assert (
        run_embed(
            EmbedConfig(
                prepared_dir=str(prepared), model="model", batch_size=128, runtime=EncoderRuntime(backend="fp32")
            )
        )
        == out
    )
    assert (out / "manifest.json").stat().st_mtime_ns == written
    # New weights in the same folder (a model retrained in place) are embedded again, never served stale.
    retrained = AutoModel.from_pretrained(model)
    with torch.no_grad():
        for param in retrained.parameters():
            param.add_(0.05 * torch.randn_like(param))
    retrained.save_pretrained(model)
    run_embed(
        EmbedConfig(
            prepared_dir=str(prepared), model=str(model), batch_size=128, runtime=EncoderRuntime(backend="fp32")
        )
    )
    ids_after, vectors_after = load_embeddings(out / "vectors")
    assert sorted(ids_after) == sorted(ids)
    after = dict(zip(ids_after, vectors_after))
    new_first = np.stack([after[i] for i in ids[:5]])
    assert not np.allclose(new_first, vectors[:5], atol=1e-3)
    np.testing.assert_allclose(new_first, TextEncoder.load(str(model)).encode(row), atol=1e-5)


def test_actor_pool_that_would_starve_reads_is_refused(ray_session):
    ds = ray.data.from_pandas(pd.DataFrame({"product_id": ["a"], "text": ["t"]}))
    with pytest.raises(ConfigError, match="actors.cpus"):
        embed_dataset(ds, EmbedConfig(actors=Actors(count=2, cpus=1.0)))


def test_the_int8_backend_on_a_cpu_embeds_without_torch_in_the_actors(tiny_model_dir, tmp_path):
    from data_pipeline.embed import runs_without_torch

    assert runs_without_torch(EmbedConfig())  # the default: MiniLM, auto = int8 on a CPU
    assert runs_without_torch(EmbedConfig(model=str(tiny_model_dir), runtime=EncoderRuntime(backend="int8")))
    assert not runs_without_torch(EmbedConfig(runtime=EncoderRuntime(backend="fp32")))
    assert not runs_without_torch(EmbedConfig(actors=Actors(gpus=1.0)))
    slow = tmp_path / "slow_tokenizer"  # no tokenizer.json: the torch actor, as before
    shutil.copytree(tiny_model_dir, slow)
    (slow / "tokenizer.json").unlink()
    assert not runs_without_torch(EmbedConfig(model=str(slow)))
