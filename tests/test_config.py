"""One config object per stage, from flags, a YAML file or code; the demo holds the whole training recipe."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from common.config import load_config
from common.errors import ConfigError
from firstlight.cli import build_parser, main
from model.folders import DEFAULT_MODEL
from train.config import TrainConfig

RECIPE = Path(__file__).resolve().parent.parent / "train" / "recipe.yaml"


def parsed(argv: list[str]):
    from common.config import config_from_args
    from firstlight.cli import STAGES

    args = build_parser().parse_args(argv)
    return config_from_args(STAGES[args.stage][0], args)


def test_the_shipped_recipe_file_is_the_default_recipe():
    cfg = load_config(TrainConfig, RECIPE)
    assert cfg == TrainConfig()
    assert (cfg.batch_size, cfg.lr, cfg.positive_at, cfg.hard_negatives, cfg.length_window) == (128, 5e-5, 2.33,
                                                                                                 "both", 16)


def test_flags_override_the_recipe_file(tmp_path):
    cfg = parsed(["train", "--config", str(RECIPE), "--prepared-dir", "data", "--batch-size", "32",
                  "--symmetric-loss", "true"])
    assert cfg == replace(TrainConfig(), prepared_dir="data", batch_size=32, symmetric_loss=True)


def test_a_yaml_value_is_converted_to_its_field_type(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("lr: 1e-4\nbatch_size: '64'\nuse_gpu: true\nepochs: 2\n")
    cfg = load_config(TrainConfig, path)
    # use_gpu means auto/yes/no in every stage; a recipe written when it was a boolean still loads
    assert (cfg.lr, cfg.batch_size, cfg.use_gpu, cfg.epochs) == (1e-4, 64, "yes", 2)


@pytest.mark.parametrize("text, field, hint", [
    ("batch_sise: 64\n", "batch_sise", "batch_size"),  # a typo names the setting it was meant to be
    ("batch_size: lots\n", "batch_size", "int"),
    ("- batch_size\n", "config", "mapping"),
    ("batch_size: [\n", "config", "not valid YAML"),
])
def test_a_bad_recipe_file_names_the_field_and_the_fix(tmp_path, text, field, hint, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    code = main(["train", "--config", str(path), "--prepared-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and f"'{field}'" in err and hint in err and "Traceback" not in err


def test_a_missing_recipe_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(TrainConfig, tmp_path / "nope.yaml")


def test_the_demo_trains_the_default_recipe_unless_told_otherwise():
    demo = parsed(["demo", "--finetune", "true"])
    assert demo.recipe() == TrainConfig()
    cfg = demo.train_config("work/data", "work/train")
    assert cfg == replace(TrainConfig(), prepared_dir="work/data", output_dir="work/train", model=DEFAULT_MODEL)
    # the recipe is a file, not a copy of every training flag; the folders are the demo's to set
    flags = build_parser().parse_args(["demo"]).__dict__
    assert not [name for name in flags if name.startswith("train_") and name != "train_recipe"]


def test_the_demo_reads_its_recipe_from_a_recipe_file(tmp_path, capsys):
    path = tmp_path / "recipe.yaml"
    path.write_text("batch_size: 64\nepochs: 2\n")
    demo = parsed(["demo", "--model", "my/encoder", "--train-recipe", str(path)])
    assert demo.recipe() == replace(TrainConfig(), batch_size=64, epochs=2)
    assert demo.train_config("d", "t").model == "my/encoder"
    assert load_config(TrainConfig, RECIPE) == TrainConfig()  # the shipped files are valid --train-recipe files
    smoke = parsed(["demo", "--train-recipe", str(RECIPE.parent.parent / "cluster" / "recipes" / "smoke.yaml")])
    assert smoke.recipe() == replace(TrainConfig(), max_steps=20, cpus_per_worker=0.5)
    path.write_text("prepared_dir: elsewhere\n")
    code = main(["demo", "--finetune", "true", "--train-recipe", str(path)])
    assert code == 2 and "'train_recipe.prepared_dir'" in capsys.readouterr().err
    # a demo config written when the recipe was a `train:` mapping names the new key
    old = tmp_path / "demo.yaml"
    old.write_text("finetune: true\ntrain:\n  batch_size: 64\n")
    code = main(["demo", "--config", str(old)])
    assert code == 2 and "train_recipe" in capsys.readouterr().err


def test_bad_training_settings_stop_the_demo_before_any_stage(tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("zero_stage: 7\n")
    code = main(["demo", "--finetune", "true", "--train-recipe", str(recipe)])
    err = capsys.readouterr().err
    assert code == 2 and "'zero_stage'" in err
