"""The training engine's pieces that need no worker: AdamW groups and the DeepSpeed config."""

import pytest
from transformers import AutoModel

from train.config import TrainConfig
from train.engine import deepspeed_config, optimizer_groups
from train.settings import Distribution


@pytest.fixture()
def tiny_model(tiny_model_dir):
    return AutoModel.from_pretrained(tiny_model_dir)  # 2 transformer layers


def test_weights_decay_and_biases_and_layer_norms_do_not(tiny_model):
    named = list(tiny_model.named_parameters())
    groups = optimizer_groups(named, weight_decay=0.01)
    decay = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert len(decay) == len(named)  # every parameter exactly once
    by_name = {n: decay[id(p)] for n, p in named}
    assert by_name["encoder.layer.1.attention.self.query.weight"] == 0.01
    assert by_name["encoder.layer.0.output.LayerNorm.weight"] == 0.0
    assert by_name["encoder.layer.1.output.dense.bias"] == 0.0
    assert [g["weight_decay"] for g in groups] == [0.01, 0.0]


def test_frozen_parameters_are_left_out(tiny_model):
    tiny_model.embeddings.requires_grad_(False)
    groups = optimizer_groups(tiny_model.named_parameters(), weight_decay=0.0)
    kept = {id(p) for g in groups for p in g["params"]}
    assert not kept & {id(p) for p in tiny_model.embeddings.parameters()}
    assert kept == {id(p) for p in tiny_model.parameters() if p.requires_grad}


@pytest.mark.parametrize("cpu_bf16, strategy, expected", [
    (True, "deepspeed", "bf16"),  # measured: twice as fast as fp32, same quality
    (False, "deepspeed", "fp32"),  # emulated bf16 would be slower
    (True, "ddp", "fp32"),  # ddp offers bf16 on GPU only
])
def test_auto_precision_is_bf16_only_where_the_cpu_has_bf16_units(monkeypatch, cpu_bf16, strategy, expected):
    import train.settings

    monkeypatch.setattr(train.settings, "cpu_has_bf16", lambda: cpu_bf16)
    cfg = TrainConfig(dist=Distribution(strategy=strategy))
    assert cfg.dist.precision == "auto" and cfg.dist.resolved_precision() == expected
    cfg.validate_settings()  # auto never resolves to a setting the checks refuse
    ds = deepspeed_config(cfg, 1)
    assert ds["torch_autocast"]["enabled"] is (expected == "bf16") and ds["bf16"]["enabled"] is False
    assert ds["zero_optimization"]["stage"] == 0  # one worker in fp32 or autocast has nothing to shard


def test_auto_precision_on_gpu_follows_the_gpu(monkeypatch):
    import train.settings

    for native, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(train.settings, "gpu_has_bf16", lambda native=native: native)
        assert Distribution(use_gpu=True).resolved_precision() == expected
