"""AdamW groups (train.param_groups): decay where it belongs, layer-wise learning rates."""

import pytest
import torch
from transformers import AutoModel
from transformers import get_linear_schedule_with_warmup

from train.param_groups import layer_depth, optimizer_groups


@pytest.fixture()
def tiny_model(tiny_model_dir):
    return AutoModel.from_pretrained(tiny_model_dir)  # 2 transformer layers


def _rate_of(groups: list[dict]) -> dict:
    return {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}


def test_layer_decay_gives_each_layer_a_share_of_the_rate_above(tiny_model):
    named = list(tiny_model.named_parameters())
    groups = optimizer_groups(named, lr=1e-3, weight_decay=0.01, layer_lr_decay=0.5, num_layers=2)
    rates = _rate_of(groups)
    assert len(rates) == len(named)  # every parameter exactly once
    by_name = {n: rates[id(p)] for n, p in named}
    assert by_name["pooler.dense.weight"] == (pytest.approx(1e-3), 0.01)
    assert by_name["encoder.layer.1.attention.self.query.weight"] == (pytest.approx(5e-4), 0.01)
    assert by_name["encoder.layer.0.output.dense.weight"] == (pytest.approx(2.5e-4), 0.01)
    assert by_name["embeddings.word_embeddings.weight"] == (pytest.approx(1.25e-4), 0.01)
    assert by_name["encoder.layer.0.output.LayerNorm.weight"] == (pytest.approx(2.5e-4), 0.0)  # no decay
    assert by_name["encoder.layer.1.output.dense.bias"][1] == 0.0
    assert groups[0]["lr"] == pytest.approx(1e-3)  # the peak rate first: logs report it


def test_without_layer_decay_two_groups_share_one_rate(tiny_model):
    groups = optimizer_groups(tiny_model.named_parameters(), lr=1e-3, weight_decay=0.01, num_layers=2)
    assert [(g["lr"], g["weight_decay"]) for g in groups] == [(1e-3, 0.01), (1e-3, 0.0)]


def test_frozen_parameters_are_left_out(tiny_model):
    tiny_model.embeddings.requires_grad_(False)
    groups = optimizer_groups(tiny_model.named_parameters(), lr=1e-3, weight_decay=0.0, layer_lr_decay=0.8,
                              num_layers=2)
    kept = {id(p) for g in groups for p in g["params"]}
    assert not kept & {id(p) for p in tiny_model.embeddings.parameters()}
    assert kept == {id(p) for p in tiny_model.parameters() if p.requires_grad}


def test_the_schedule_keeps_each_layers_share(tiny_model):
    groups = optimizer_groups(tiny_model.named_parameters(), lr=1e-3, weight_decay=0.01, layer_lr_decay=0.5,
                              num_layers=2)
    optimizer = torch.optim.AdamW(groups)
    schedule = get_linear_schedule_with_warmup(optimizer, 2, 10)
    for _ in range(5):
        optimizer.step()
        schedule.step()
    rates = schedule.get_last_lr()
    assert rates[0] == pytest.approx(1e-3 * 5 / 8)  # step 5 of 10, 2 of them warm-up
    assert sorted({round(r / rates[0], 6) for r in rates}) == [0.125, 0.25, 0.5, 1.0]


@pytest.mark.parametrize("name, depth", [
    ("embeddings.position_embeddings.weight", 0),
    ("encoder.layer.0.attention.self.key.bias", 1),
    ("base_model.model.encoder.layer.5.output.dense.lora_A.default.weight", 6),
    ("pooler.dense.weight", 7),
])
def test_layer_depth_reads_plain_and_adapter_names(name, depth):
    assert layer_depth(name, 6) == depth


def test_layer_decay_on_a_model_without_bert_layer_names_says_it_does_nothing(caplog):
    head = torch.nn.Linear(4, 4)
    groups = optimizer_groups(head.named_parameters(), lr=1e-3, weight_decay=0.0, layer_lr_decay=0.8, num_layers=0)
    assert {g["lr"] for g in groups} == {1e-3}
    assert "found no embeddings" in caplog.text
