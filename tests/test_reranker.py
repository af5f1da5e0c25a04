"""The cross-encoder reranker: its export loads in sentence-transformers with the same scores, its
losses move a known case the right way, its config refuses what cannot work."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.config import build_config
from common.errors import ConfigError
from model.reranker import Reranker, export_reranker, new_reranker
from train.rerank_config import RerankerConfig
from train.rerank_losses import RerankLoss

PAIRS = [("cordless drill", "DEWALT 20-Volt MAX Cordless Drill Kit"),
         ("cordless drill", "Rust-Oleum 12 oz. Flat Black Spray Paint"),
         ("water heater xe40m06", "Rheem Performance 40 Gal. Water Heater XE40M06"),
         ("我需要一件外套 🧥", "Husky 3/8 in. Drive Ratchet Set")]


@pytest.fixture(scope="module")
def reranker_dir(tmp_path_factory, tiny_model_dir):
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("reranker") / "model"
    return export_reranker(new_reranker(str(tiny_model_dir)), AutoTokenizer.from_pretrained(tiny_model_dir), out,
                           max_length=64)


def test_export_loads_in_sentence_transformers_with_the_same_scores(reranker_dir):
    from sentence_transformers import CrossEncoder

    ours = Reranker.load(str(reranker_dir), max_length=64, device="cpu", backend="fp32")
    theirs = CrossEncoder(str(reranker_dir), device="cpu", max_length=64)
    queries, texts = [q for q, _ in PAIRS], [t for _, t in PAIRS]
    mine = ours.score_pairs(queries, texts)
    assert np.allclose(mine, theirs.predict(PAIRS, activation_fn=torch.nn.Identity()), atol=1e-5)
    assert np.allclose(1 / (1 + np.exp(-mine)), theirs.predict(PAIRS), atol=1e-5)  # its default sigmoid
    assert len(set(np.round(mine, 6))) == len(PAIRS)  # real, distinct scores, not a constant


def test_an_encoder_folder_is_not_taken_for_a_reranker(tiny_model_dir):
    with pytest.raises(ConfigError, match="reranker"):
        Reranker.load(str(tiny_model_dir))


@pytest.mark.parametrize("kind", ["listnet", "bce"])
def test_training_steps_put_the_relevant_product_first(kind, reranker_dir):
    """A known case: a few optimizer steps on one group make its exact match outrank the rest."""
    from transformers import AutoTokenizer

    model = new_reranker(str(reranker_dir)).train()
    tokenizer = AutoTokenizer.from_pretrained(reranker_dir)
    query = "cordless drill"
    texts = ["Rust-Oleum 12 oz. Flat Black Spray Paint", "DEWALT 20-Volt MAX Cordless Drill Kit",
             "Husky 3/8 in. Drive Ratchet Set", "pad"]
    labels = torch.tensor([[1.0, 3.0, 1.67, 1.0]])
    valid = torch.tensor([[True, True, True, False]])  # the last place is padding
    enc = tokenizer([query] * 4, texts, padding=True, return_tensors="pt")
    loss_fn, optimizer = RerankLoss(kind), torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(25):
        logits = model(**enc).logits[:, 0].view(1, 4)
        loss = loss_fn(logits, labels, valid)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    with torch.no_grad():
        scores = model(**enc).logits[:, 0]
    assert int(scores[:3].argmax()) == 1 and float(scores[1]) > float(scores[2]) > float(scores[0]) - 1.0


def test_listnet_ignores_padding():
    loss = RerankLoss("listnet")
    labels = torch.tensor([[3.0, 1.0, 2.0]])
    logits = torch.tensor([[2.0, 0.0, 1.0]])
    padded = loss(torch.tensor([[2.0, 0.0, 1.0, 50.0]]), torch.tensor([[3.0, 1.0, 2.0, 3.0]]),
                  torch.tensor([[True, True, True, False]]))
    assert float(padded) == pytest.approx(float(loss(logits, labels, torch.ones(1, 3, dtype=torch.bool))))


@pytest.mark.parametrize("change, field", [({"loss": "hinge"}, "loss"), ({"group_size": 1}, "group_size"),
                                           ({"mined_per_group": 8}, "mined_per_group"),
                                           ({"grad_cache_chunk": 4}, "grad_cache_chunk"),
                                           ({"lora_rank": 8}, "lora_rank"),
                                           ({"first_stage": {"mode": "sparse"}}, "first_stage.mode")])
def test_reranker_config_refuses_what_cannot_work(change, field):
    with pytest.raises(ConfigError) as err:
        build_config(RerankerConfig, change).validate_settings()
    assert err.value.field == field
