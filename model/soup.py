"""Model soup: one encoder whose weights are the mean of several fine-tuned encoders' weights.

Fine-tuning runs that start from the same pretrained encoder end in one basin of the loss, so the
average of their weights is itself a good encoder (Wortsman et al., "Model soups", 2022). On Home
Depot (benchmarks/RESULTS.md) the mean of 13 symmetric-loss runs that differ in their settings
ranked 0.394 / 0.823 nDCG@10 / Recall@100 against 0.387 / 0.816 for a single run on average, while
four seeds of one setting averaged to no gain: the diversity of the runs is what helps. The soup
serves at the cost of one encoder: same size, same speed; its price is paid once, in training runs
(on a GPU cluster, side by side).

    firstlight soup --models run-a/model,run-b/model,run-c/model --output_dir soup/model

Every ingredient must be an exported encoder of the same architecture and tokenizer (a
``firstlight train`` export, a sentence-transformers folder or a Hugging Face folder). The output is
a sentence-transformers folder like ``firstlight train``'s export, so embed, index, evaluate and
serve take it as their ``--model``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from common.config import Listed, listed
from common.errors import ConfigError
from model.export import export_sentence_transformer
from model.folders import (
    check_model_folders,
    read_prompts,
    run_on_local_copies,
    source_of,
    uses_bucket,
)

log = logging.getLogger(__name__)


@dataclass
class SoupConfig:
    models: Listed = field(default=(), metadata={
        "help": "exported encoder folders to average, comma-separated (two or more)"})
    output_dir: str = field(default="", metadata={"help": "where the averaged encoder is written"})

    def __post_init__(self):
        self.models = listed(self.models)

    def validate(self) -> None:
        check_model_folders(self.models, self.output_dir, "a soup averages")
        if uses_bucket(self):  # checked on the local copies, once they are fetched
            return
        first = _shape_of(Path(self.models[0]))
        for model in self.models[1:]:
            other = _shape_of(Path(model))
            if other != first:
                diff = sorted(k for k in first.keys() | other.keys() if first.get(k) != other.get(k))
                raise ConfigError("models", f"{model} is not the architecture of {self.models[0]} "
                                  f"(they differ in {', '.join(diff)})",
                                  "average only fine-tunes of one pretrained encoder")


def _shape_of(folder: Path) -> dict:
    """What must match for weights to be averaged: the architecture's sizes and the vocabulary."""
    config = _read_json(folder, "config.json")
    keys = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
            "vocab_size", "max_position_embeddings")
    return {k: config.get(k) for k in keys}


def _read_json(folder: Path, name: str) -> dict:
    """A model folder's JSON file, or {} where the folder has none (a plain Hugging Face folder)."""
    if not (folder / name).is_file():
        return {}
    with open(folder / name) as fh:
        return json.load(fh)


def _max_length(folder: Path) -> int:
    return int(_read_json(folder, "firstlight.json").get("max_length")
               or _read_json(folder, "sentence_bert_config.json").get("max_seq_length") or 64)


def _base_model(folder: Path) -> dict:
    base = _read_json(folder, "firstlight.json").get("base_model")
    return {"base_model": base} if base else {}


def run_soup(cfg: SoupConfig) -> Path | str:
    import torch
    from transformers import AutoModel, AutoTokenizer

    cfg.validate()
    if uses_bucket(cfg):  # the weights are read and written on local copies
        return run_on_local_copies(run_soup, cfg, marker="config.json")
    folders = [Path(m).expanduser().resolve() for m in cfg.models]
    # A running float64 sum: memory stays at about three models' worth however many ingredients there are.
    total, base = None, None
    for i, folder in enumerate(folders, 1):
        log.info("[soup] %d/%d: %s", i, len(folders), folder)
        net = AutoModel.from_pretrained(folder, dtype=torch.float32)
        state = net.state_dict()
        if total is None:
            base = net
            total = {k: v.detach().double().clone() for k, v in state.items() if v.is_floating_point()}
            continue
        weights = {k for k, v in state.items() if v.is_floating_point()}
        if weights != total.keys():
            missing = sorted(total.keys() ^ weights)[:3]
            raise ConfigError("models", f"{folder} has other weights than {folders[0]} (e.g. {missing})",
                              "average only fine-tunes of one pretrained encoder")
        for k in weights:
            total[k] += state[k].double()
        del net
    # Integer buffers (position ids) are the same in every ingredient and stay as they are.
    base.load_state_dict({k: (v / len(folders)).to(torch.float32) for k, v in total.items()}, strict=False)
    lengths = {_max_length(f) for f in folders}
    if len(lengths) > 1:
        log.warning("[soup] the models were exported with max lengths %s; the soup keeps %d",
                    sorted(lengths), max(lengths))
    out = export_sentence_transformer(base, AutoTokenizer.from_pretrained(folders[0]), Path(cfg.output_dir),
                                      max(lengths), extra={**_base_model(folders[0]),
                                                           "soup_of": [source_of(f) for f in folders]},
                                      prompts=read_prompts(folders[0]))
    log.info("[soup] the mean of %d encoders is in %s", len(folders), out)
    return out
