"""The Retriever's torch-free query encoder (model/onnx_text.py) gives the vectors the Encoder
deployment gives in int8, so encoding a query next to its search changes no ranking."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from model.encoder import TextEncoder
from model.folders import MANIFEST
from model.onnx_text import OnnxTextEncoder, unsupported

QUERIES = ["cordless drill", "I need a light jacket for a spring outing", "a", "Women&#39;s  boots, " * 40,
           "ÉTÉ café 30 in. vanity", "我需要一件适合春游的外套"]


@pytest.fixture()
def onnx_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FIRSTLIGHT_CACHE", str(tmp_path / "cache"))


@pytest.fixture()
def prompted_model(tiny_model_dir, tmp_path):
    """The tiny model with e5-style prompts, as multilingual-e5 folders carry them."""
    folder = tmp_path / "prompted"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "config_sentence_transformers.json").write_text(json.dumps({"prompts": {"query": "query: ",
                                                                                      "passage": "passage: "}}))
    return folder


@pytest.mark.parametrize("prompts", [False, True])
def test_query_vectors_match_the_int8_encoder(tiny_model_dir, prompted_model, onnx_cache, prompts):
    folder = str(prompted_model if prompts else tiny_model_dir)
    reference = TextEncoder.load(folder, backend="int8", device="cpu", max_length={"query": 16, "passage": 64,
                                                                                  None: 64}).encode(QUERIES, role="query")
    vectors = OnnxTextEncoder(folder, max_length=16).encode(QUERIES)  # the long one is cut at 16 tokens, as there
    assert vectors.dtype == np.float32 and vectors.shape == reference.shape
    assert np.abs(vectors - reference).max() < 1e-5
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_the_retriever_process_never_loads_torch_even_to_export(tiny_model_dir, onnx_cache):
    code = ("import sys; from model.onnx_text import OnnxTextEncoder; "
            f"OnnxTextEncoder({str(tiny_model_dir)!r}, 16).encode(['drill']); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("False")  # the missing int8 file was exported in a child process


def test_models_it_cannot_encode_are_named_with_the_reason(tiny_model_dir, tmp_path):
    assert unsupported(str(tiny_model_dir)) is None
    slow = tmp_path / "slow_tokenizer"
    shutil.copytree(tiny_model_dir, slow)
    (slow / "tokenizer.json").unlink()
    assert "tokenizer.json" in unsupported(str(slow))
    ensemble = tmp_path / "ensemble"
    ensemble.mkdir()
    (ensemble / MANIFEST).write_text("{}")  # what model/ensemble.py writes
    assert "ensemble" in unsupported(str(ensemble))
