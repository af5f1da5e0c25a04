"""Inference backends (model/backends.py): the switch, its checks, and that each backend computes
what fp32 computes, for the encoder and the reranker."""

import numpy as np
import pytest
import torch

from common.errors import ConfigError
from data_pipeline.embed import EmbedConfig
from evaluation.evaluate import EvalConfig
from model import backends, onnx_int8
from model.encoder import TextEncoder
from model.reranker import Reranker
from model.runtime import EncoderRuntime

TEXTS = ["cordless drill with two batteries", "white bathroom vanity 30 in.", "light jacket for a spring outing",
         "a", "outdoor solar path lights, set of 6, stainless steel"]


@pytest.fixture()
def onnx_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FIRSTLIGHT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "onnx"


@pytest.fixture(scope="module")
def tiny_reranker_dir(tmp_path_factory, tiny_model_dir):
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    out = tmp_path_factory.mktemp("tiny_reranker")
    torch.manual_seed(0)
    config = BertConfig.from_pretrained(tiny_model_dir, num_labels=1)
    BertForSequenceClassification(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


@pytest.mark.parametrize("native", [True, False])
def test_auto_is_int8_on_a_cpu_and_bf16_only_on_gpus_with_bf16_units(monkeypatch, native):
    monkeypatch.setattr(backends, "gpu_has_bf16", lambda: native)
    assert backends.resolve_backend("auto", torch.device("cpu")) == "int8"
    assert backends.resolve_backend("auto", torch.device("cuda")) == ("bf16" if native else "fp32")
    assert backends.resolve_backend("bf16", torch.device("cpu")) == "bf16"  # an explicit choice stands


def test_the_int8_cache_falls_back_to_the_temporary_directory_when_home_is_read_only(monkeypatch, tmp_path):
    monkeypatch.delenv("FIRSTLIGHT_CACHE", raising=False)
    home = tmp_path / "home"
    home.mkdir()
    (home / ".cache").write_text("")  # ~/.cache cannot become a folder (as on a read-only home, even for root)
    monkeypatch.setattr(onnx_int8.Path, "home", classmethod(lambda cls: home))
    monkeypatch.setattr(onnx_int8.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    assert onnx_int8.cache_dir() == tmp_path / "tmp" / "firstlight-onnx"
    monkeypatch.setenv("FIRSTLIGHT_CACHE", str(tmp_path / "mine"))
    assert onnx_int8.cache_dir() == tmp_path / "mine" / "onnx"


def test_bad_backend_choices_are_named():
    with pytest.raises(ConfigError, match="'runtime.backend'.*fp16.*auto, fp32, bf16, int8"):
        EmbedConfig(runtime=EncoderRuntime(backend="fp16")).validate()
    with pytest.raises(ConfigError, match="'runtime.backend'"):
        EvalConfig(prepared_dir="x", runtime=EncoderRuntime(backend="onnx")).validate()
    with pytest.raises(ConfigError, match="int8 runs on the CPU"):
        backends.resolve_backend("int8", torch.device("cuda"))


def test_bf16_and_int8_encoders_match_fp32(tiny_model_dir, onnx_cache):
    reference = TextEncoder.load(str(tiny_model_dir), backend="fp32", device="cpu").encode(TEXTS)
    for backend, floor in (("bf16", 0.995), ("int8", 0.95)):
        encoder = TextEncoder.load(str(tiny_model_dir), backend=backend, device="cpu")
        assert encoder.backend == backend
        vectors = encoder.encode(TEXTS)
        assert vectors.dtype == np.float32 and vectors.shape == reference.shape
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        assert (vectors * reference).sum(axis=1).min() > floor, backend
    # the int8 file is exported once and reused: a second load does not rewrite it
    [cached] = list(onnx_cache.glob("*-encoder-*/model_qint8.onnx"))
    stamp = cached.stat().st_mtime_ns
    TextEncoder.load(str(tiny_model_dir), backend="int8", device="cpu").encode(TEXTS[:1])
    assert cached.stat().st_mtime_ns == stamp


def test_int8_encoder_batches_like_single_texts(tiny_model_dir, onnx_cache):
    encoder = TextEncoder.load(str(tiny_model_dir), backend="int8", device="cpu")
    together = encoder.encode(TEXTS)
    alone = np.vstack([encoder.encode([t]) for t in TEXTS])
    np.testing.assert_allclose(together, alone, atol=2e-3)  # padding changes nothing beyond int8 rounding


def test_bf16_and_int8_rerankers_keep_fp32_scores(tiny_reranker_dir, onnx_cache):
    query = "drill"
    reference = Reranker.load(str(tiny_reranker_dir), backend="fp32", device="cpu").score(query, TEXTS)
    for backend in ("bf16", "int8"):
        reranker = Reranker.load(str(tiny_reranker_dir), backend=backend, device="cpu")
        assert reranker.backend == backend
        scores = reranker.score(query, TEXTS)
        assert scores.dtype == np.float32 and scores.shape == (len(TEXTS),)
        np.testing.assert_allclose(scores, reference, atol=0.05)
    assert list(onnx_cache.glob("*-reranker-*/model_qint8.onnx"))


@pytest.mark.parametrize("verbose", [False, True])
def test_the_int8_export_keeps_the_tracer_and_quantiser_chatter_for_verbose(tiny_model_dir, onnx_cache, monkeypatch,
                                                                           caplog, verbose):
    import logging
    import warnings

    monkeypatch.setenv("FIRSTLIGHT_VERBOSE", "1" if verbose else "")
    with warnings.catch_warnings(record=True) as shown, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        TextEncoder.load(str(tiny_model_dir), backend="int8", device="cpu")
    assert any(onnx_cache.rglob("model_qint8.onnx"))  # it did export
    chatter = [str(w.message) for w in shown] + [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert bool(chatter) == verbose, chatter[:3]
