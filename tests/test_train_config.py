"""Training settings checked before any worker starts, and what the engine and the tasks build from
them: no Ray Train run here (the quick tier keeps these)."""

from __future__ import annotations

import pytest

from firstlight.cli import main
from tests.test_train import config_of, prepared, tiny_config  # noqa: F401 - the shared fixture
from train.config import TrainConfig


def test_deepspeed_config_follows_precision_and_workers(prepared, tiny_model_dir, tmp_path):
    """One worker runs ZeRO-0 unless it holds 16-bit weights; bf16 on CPU is DeepSpeed's autocast."""
    from train.engine import deepspeed_config

    def ds(**kw):
        cfg = tiny_config(prepared, tiny_model_dir, tmp_path, **kw)
        cfg.validate()
        conf = deepspeed_config(cfg, cfg.dist.num_workers)
        return conf["zero_optimization"]["stage"], conf["torch_autocast"]["enabled"], conf["bf16"]["enabled"]

    assert ds(num_workers=1, zero_stage=2) == (0, False, False)
    assert ds(num_workers=2, zero_stage=2) == (2, False, False)
    assert ds(num_workers=1, zero_stage=2, precision="bf16") == (0, True, False)
    assert ds(num_workers=2, zero_stage=2, precision="bf16") == (2, True, False)
    assert ds(num_workers=1, zero_stage=2, precision="bf16", mixed_precision="weights") == (2, False, True)
    assert ds(num_workers=2, zero_stage=2, precision="bf16", use_gpu=True) == (2, False, True)


def test_the_encoder_trains_with_dropout_unless_turned_off(tiny_model_dir):
    """As sentence-transformers trains: dropout on (two passes over one batch differ); --dropout false: equal."""
    import torch

    from train.engine import attention_for
    from train.tasks import task_of

    ids = torch.randint(1000, 2000, (4, 12), generator=torch.Generator().manual_seed(0))
    for dropout in (True, False):
        cfg = config_of(TrainConfig, model=str(tiny_model_dir), dropout=dropout, use_gpu="no")
        model = task_of(cfg).model(cfg, str(tiny_model_dir), attention_for(cfg))
        assert model.training is dropout and all(m.training is dropout for m in model.modules())
        assert model.config._attn_implementation == "eager"  # CPU: the fused attention backward is slow in bf16
        first, second = (model(input_ids=ids).last_hidden_state for _ in range(2))
        assert torch.equal(first, second) is not dropout


@pytest.mark.parametrize("flags, field, hint", [
    (["--dist.zero_stage", "4"], "dist.zero_stage", "use 0, 1, 2 or 3"),
    (["--dist.precision", "fp16"], "dist.precision", "bf16 or fp32 on CPU"),
    (["--optim.grad_accum", "0"], "optim.grad_accum", ">= 1"),
    (["--dist.precision", "bf16", "--dist.mixed_precision", "weights", "--dist.zero_stage", "0"], "dist.zero_stage",
     "--dist.zero_stage 1 or 2"),
    (["--dist.precision", "bf16", "--dist.num_workers", "2", "--dist.zero_stage", "1"], "dist.zero_stage",
     "--dist.zero_stage 2 (or 0)"),
    (["--dist.mixed_precision", "fp8"], "dist.mixed_precision", "autocast"),
    (["--model", "./no/such/model"], "model", "does not exist"),
    (["--optim.batch_size", "64", "--grad_cache_chunk", "24"], "grad_cache_chunk", "divides optim.batch_size"),
    (["--grad_cache_chunk", "16", "--optim.grad_accum", "2"], "grad_cache_chunk", "--optim.grad_accum 1"),
    (["--lora.rank", "-1"], "lora.rank", ">= 0"),
    (["--dist.placement_strategy", "EVERYWHERE"], "dist.placement_strategy", "STRICT_SPREAD"),
    (["--data.splits", "train,test"], "data.splits", "use train or train,val"),
    (["--data.splits", "train,val"], "data.splits", "--checkpoints.val_queries 0"),
])
def test_bad_training_config_fails_before_any_worker(prepared, flags, field, hint, capsys):
    code = main(["train", "--prepared_dir", str(prepared), *flags])
    err = capsys.readouterr().err
    assert code == 2 and f"'{field}'" in err and hint in err and "Traceback" not in err


def test_missing_split_fails_before_any_worker(prepared, tmp_path, capsys):
    import shutil

    broken = tmp_path / "data"
    shutil.copytree(prepared, broken)
    shutil.rmtree(broken / "judgments" / "val")
    code = main(["train", "--prepared_dir", str(broken)])
    err = capsys.readouterr().err
    assert code == 2 and "no val split" in err and "firstlight prepare" in err


def test_mining_without_an_index_is_a_config_error(prepared, tmp_path, capsys):
    code = main(["train", "--prepared_dir", str(prepared), "--hard_negatives", "mined",
                 "--mine_index_dir", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert code == 2 and "'mine_index_dir'" in err and "firstlight index" in err


def test_lora_with_unknown_layer_names_is_a_config_error(prepared, tiny_model_dir, tmp_path):
    import torch
    from transformers import AutoModel

    from common.errors import ConfigError
    from train.lora import add_adapters

    cfg = tiny_config(prepared, tiny_model_dir, tmp_path, lora_rank=4, lora_targets="q_proj,v_proj")
    with pytest.raises(ConfigError, match="lora.targets"):
        add_adapters(AutoModel.from_pretrained(tiny_model_dir, dtype=torch.float32), cfg.lora)


def test_lora_default_targets_fit_multilingual_e5(e5_model_dir):
    from transformers import AutoModel

    from train.lora import LoRA, add_adapters

    model = add_adapters(AutoModel.from_pretrained(e5_model_dir), LoRA(rank=4))
    adapted = {name.rsplit(".lora_A", 1)[0] for name, _ in model.named_modules() if name.endswith("lora_A")}
    # every layer's query, key, value and three dense projections (the pooler's too, unused by mean pooling)
    assert len([n for n in adapted if ".layer." in n]) == 12 * 6
