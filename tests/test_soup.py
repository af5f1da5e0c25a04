"""Model soup: the averaged encoder is the exact mean of its ingredients and serves like any export."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

from common.errors import ConfigError
from firstlight.cli import main
from model.encoder import TextEncoder
from model.export import export_sentence_transformer
from model.soup import SoupConfig, run_soup


def _tiny_export(folder, tiny_model_dir, seed, hidden=32):
    """A tiny encoder exported as `firstlight train` does; each seed gives other weights."""
    torch.manual_seed(seed)
    config = BertConfig.from_pretrained(tiny_model_dir, hidden_size=hidden, intermediate_size=2 * hidden)
    return export_sentence_transformer(BertModel(config), AutoTokenizer.from_pretrained(tiny_model_dir), folder,
                                       max_length=48, extra={"base_model": "tiny"})


@pytest.fixture(scope="module")
def ingredients(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("soup")
    return [_tiny_export(root / f"run{s}", tiny_model_dir, seed=s) for s in (1, 2, 3)]


def test_soup_is_the_mean_of_its_ingredients_and_loads_in_sentence_transformers(ingredients, tmp_path):
    from sentence_transformers import SentenceTransformer

    out = run_soup(SoupConfig(models=tuple(str(f) for f in ingredients), output_dir=str(tmp_path / "soup")))
    states = [AutoModel.from_pretrained(f).state_dict() for f in ingredients]
    soup = AutoModel.from_pretrained(out).state_dict()
    weight = "encoder.layer.0.attention.self.query.weight"
    assert not torch.allclose(states[0][weight], states[1][weight])
    for name, value in soup.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, sum(s[name] for s in states) / 3, atol=1e-6, rtol=0)
    meta = json.loads((out / "firstlight.json").read_text())
    assert meta["soup_of"] == [str(f.resolve()) for f in ingredients]
    assert meta["base_model"] == "tiny" and meta["max_length"] == 48

    texts = ["cordless drill 18v", "white vinyl fence post cap", "light jacket for spring"]
    ours = TextEncoder.load(str(out), device="cpu").encode(texts)
    theirs = SentenceTransformer(str(out), device="cpu").encode(texts)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    assert np.allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-5)
    # the soup is a new encoder, not a copy of one ingredient
    first = TextEncoder.load(str(ingredients[0]), device="cpu").encode(texts)
    assert np.abs(first - ours).max() > 1e-3


def test_soup_command_line_writes_the_folder(ingredients, tmp_path):
    out = tmp_path / "cli_soup"
    assert main(["soup", "--models", f"{ingredients[0]},{ingredients[1]}", "--output_dir", str(out)]) == 0
    assert (out / "model.safetensors").is_file() and (out / "modules.json").is_file()


@pytest.mark.parametrize("case, field, words", [
    ("one", "models", "two or more"),
    ("missing", "models", "no config.json"),
    ("twice", "models", "listed twice"),
    ("other_size", "models", "hidden_size"),
    ("into_input", "output_dir", "one of the models"),
])
def test_bad_soup_configs_name_the_field(case, field, words, ingredients, tiny_model_dir, tmp_path):
    a, b = str(ingredients[0]), str(ingredients[1])
    models, output = {
        "one": ((a,), tmp_path / "o"),
        "missing": ((a, str(tmp_path / "nope")), tmp_path / "o"),
        "twice": ((a, a), tmp_path / "o"),
        "other_size": ((a, str(_tiny_export(tmp_path / "wide", tiny_model_dir, seed=4, hidden=64))), tmp_path / "o"),
        "into_input": ((a, b), b),
    }[case]
    with pytest.raises(ConfigError) as err:
        run_soup(SoupConfig(models=models, output_dir=str(output)))
    assert err.value.field == field and words in str(err.value)
    assert not (tmp_path / "o").exists()
