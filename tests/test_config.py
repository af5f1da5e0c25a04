"""One config object per stage, from flags, a YAML file or code (jsonargparse builds all three from the
stage's dataclass); the demo holds the whole training recipe."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from common.config import build_config, load_config
from common.errors import ConfigError
from firstlight.cli import main, parse_command, stage_parser
from model.folders import DEFAULT_MODEL
from train.config import TrainConfig
from train.settings import Distribution, Optimisation

RECIPE = Path(__file__).resolve().parent.parent / "train" / "recipe.yaml"


def parsed(argv: list[str]):
    return parse_command(argv)[1]


def test_the_shipped_recipe_file_is_the_default_recipe():
    cfg = load_config(TrainConfig, RECIPE)
    assert cfg == TrainConfig()
    assert (cfg.optim.batch_size, cfg.optim.lr, cfg.data.positive_at, cfg.hard_negatives, cfg.length_window) == \
        (128, 5e-5, 2.33, "both", 16)


def test_flags_override_the_recipe_file(tmp_path):
    cfg = parsed(["train", "--config", str(RECIPE), "--prepared_dir", "data", "--optim.batch_size", "32",
                  "--symmetric_loss", "true"])
    assert cfg == replace(TrainConfig(), prepared_dir="data", optim=Optimisation(batch_size=32), symmetric_loss=True)


def test_print_config_writes_a_file_that_loads_back_as_the_same_config(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--optim.lr", "1e-4", "--print_config"])
    path = tmp_path / "printed.yaml"
    path.write_text(capsys.readouterr().out)
    cfg = parsed(["train", "--config", str(path)])
    assert cfg == replace(TrainConfig(), optim=Optimisation(lr=1e-4))


def test_a_yaml_value_is_converted_to_its_field_type(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("optim:\n  lr: 1e-4\n  batch_size: '64'\n  epochs: 2\ndist:\n  use_gpu: true\n")
    cfg = load_config(TrainConfig, path)
    # use_gpu means auto/yes/no in every stage; a recipe written when it was a boolean still loads
    assert (cfg.optim.lr, cfg.optim.batch_size, cfg.dist.use_gpu, cfg.optim.epochs) == (1e-4, 64, "yes", 2)


@pytest.mark.parametrize("text, field, hint", [
    ("optim:\n  batch_sise: 64\n", "optim.batch_sise", "batch_size"),  # a typo names the setting it was meant to be
    ("optim:\n  batch_size: lots\n", "optim.batch_size", "int"),
    ("batch_size: 64\n", "batch_size", "optim.batch_size"),  # a recipe from before components names the new key
    ("checkpoint_every: 10\n", "checkpoint_every", "checkpoints.every"),
    ("optim: 3\n", "optim", "mapping"),
    ("- batch_size\n", "config", "mapping"),
    ("batch_size: [\n", "config", "not valid YAML"),
])
def test_a_bad_recipe_file_names_the_field_and_the_fix(tmp_path, text, field, hint, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    code = main(["train", "--config", str(path), "--prepared_dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and f"'{field}'" in err and hint in err and "Traceback" not in err


@pytest.mark.parametrize("argv, flag, hint", [
    (["train", "--lr", "1e-4"], "--lr", "--optim.lr"),  # moved into a component
    (["train", "--num-workers", "2"], "--num-workers", "--dist.num_workers"),
    (["train", "--prepared-dir", "d"], "--prepared-dir", "--prepared_dir"),  # the old dashed spelling
    (["serve", "--first-stage-depth", "50"], "--first-stage-depth", "--first_stage.depth"),
    (["serve", "--candidate-depth", "50"], "--candidate-depth", "--first_stage.depth"),
    (["train", "--optim.lrr", "1"], "--optim.lrr", "--optim.lr"),  # a typo: the closest flags
    (["train", "--optim.lr", "fast"], "optim.lr", "float"),
    (["train-reranker", "--lora.rank", "4"], "--lora.rank", "is not a flag"),  # the reranker has no LoRA
])
def test_a_bad_flag_names_the_flag_and_the_fix(argv, flag, hint, capsys):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and f"'{flag}'" in err and hint in err and "Traceback" not in err


def test_code_builds_configs_from_nested_or_dotted_settings():
    nested = build_config(TrainConfig, {"optim": {"lr": 1e-4}, "dist": {"num_workers": "2"}})
    dotted = build_config(TrainConfig, {"optim.lr": "1e-4", "dist.num_workers": 2})
    assert nested == dotted == replace(TrainConfig(), optim=Optimisation(lr=1e-4), dist=Distribution(num_workers=2))
    with pytest.raises(ConfigError, match="dist.num_workers"):
        build_config(TrainConfig, {"dist.num_workers": "two"})


def test_each_task_sets_its_own_defaults_through_the_shared_components():
    from train.rerank_config import RerankerConfig

    encoder, reranker = TrainConfig(), RerankerConfig()
    assert (encoder.optim.batch_size, encoder.optim.lr, encoder.checkpoints.every) == (128, 5e-5, 90)
    assert (reranker.optim.batch_size, reranker.optim.lr, reranker.optim.max_steps, reranker.checkpoints.every) == \
        (16, 1e-4, 250, 125)
    assert type(reranker.optim) is type(encoder.optim) and not isinstance(reranker, TrainConfig)
    # a flag changes one setting of a component; the task's other defaults stay
    cfg = parsed(["train-reranker", "--optim.lr", "3e-4"])
    assert (cfg.optim.lr, cfg.optim.batch_size, cfg.optim.max_steps) == (3e-4, 16, 250)


def test_a_missing_recipe_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(TrainConfig, tmp_path / "nope.yaml")


def test_the_demo_trains_the_default_recipe_unless_told_otherwise():
    demo = parsed(["demo", "--finetune", "true"])
    assert demo.recipe() == TrainConfig()
    cfg = demo.train_config("work/data", "work/train")
    assert cfg == replace(TrainConfig(), prepared_dir="work/data", output_dir="work/train", model=DEFAULT_MODEL)
    # the recipe is a file, not a copy of every training flag; the folders are the demo's to set
    flags = {flag for flag in stage_parser("demo")._option_string_actions}
    assert not [flag for flag in flags if flag.startswith("--train") and flag != "--train_recipe"]


def test_the_demo_reads_its_recipe_from_a_recipe_file(tmp_path, capsys):
    path = tmp_path / "recipe.yaml"
    path.write_text("optim:\n  batch_size: 64\n  epochs: 2\n")
    demo = parsed(["demo", "--model", "my/encoder", "--train_recipe", str(path)])
    assert demo.recipe() == replace(TrainConfig(), optim=Optimisation(batch_size=64, epochs=2))
    assert demo.train_config("d", "t").model == "my/encoder"
    smoke = parsed(["demo", "--train_recipe", str(RECIPE.parent.parent / "cluster" / "recipes" / "smoke.yaml")])
    assert smoke.recipe() == replace(TrainConfig(), optim=Optimisation(max_steps=20),
                                     dist=Distribution(cpus_per_worker=0.5))
    path.write_text("prepared_dir: elsewhere\n")
    code = main(["demo", "--finetune", "true", "--train_recipe", str(path)])
    assert code == 2 and "'train_recipe.prepared_dir'" in capsys.readouterr().err
    # a demo config written when the recipe was a `train:` mapping names the new key
    old = tmp_path / "demo.yaml"
    old.write_text("finetune: true\ntrain:\n  batch_size: 64\n")
    code = main(["demo", "--config", str(old)])
    assert code == 2 and "train_recipe" in capsys.readouterr().err


def test_bad_training_settings_stop_the_demo_before_any_stage(tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("dist:\n  zero_stage: 7\n")
    code = main(["demo", "--finetune", "true", "--train_recipe", str(recipe)])
    err = capsys.readouterr().err
    assert code == 2 and "'dist.zero_stage'" in err
