"""Export an encoder as a sentence-transformers folder (Transformer -> mean Pooling -> Normalize).

The folder loads with ``SentenceTransformer(path)`` and with FirstLight's ``TextEncoder.load(path)``,
and both give the same vectors; the embed, index and evaluate stages take it as ``--model``. A model
with query / passage prompts (multilingual-e5's "query: " / "passage: ") keeps them in
``config_sentence_transformers.json``, where sentence-transformers reads them too.
"""

from __future__ import annotations

import json
from pathlib import Path

from common.manifest import atomic_folder, write_json


def export_sentence_transformer(model, tokenizer, folder: Path, max_length: int, extra: dict | None = None,
                                prompts: dict | None = None) -> Path:
    folder = Path(folder)
    with atomic_folder(folder) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_sentence_transformer_files(tmp, dim=int(model.config.hidden_size), max_length=max_length,
                                         prompts=prompts, extra=extra)
    return folder


def write_sentence_transformer_files(folder: Path, dim: int, max_length: int, prompts: dict | None = None,
                                     extra: dict | None = None) -> None:
    """The files beside the transformer's that make ``folder`` a sentence-transformers model."""
    folder = Path(folder)
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "2_Normalize").mkdir(exist_ok=True)
    _dump(folder / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ])
    _dump(folder / "sentence_bert_config.json", {"max_seq_length": int(max_length), "do_lower_case": False})
    _dump(folder / "1_Pooling" / "config.json", {
        "word_embedding_dimension": dim, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False})
    _dump(folder / "config_sentence_transformers.json",
          {"similarity_fn_name": "cosine", **({"prompts": dict(prompts), "default_prompt_name": None}
                                              if prompts else {})})
    write_json(folder / "firstlight.json", {"max_length": int(max_length), **(extra or {})})


def _dump(path: Path, data) -> None:
    with open(path, "w") as fh:
        json.dump(data, fh, indent=2)
