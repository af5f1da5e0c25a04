"""Teaching one encoder what an ensemble of fine-tuned encoders knows: in-batch distillation.

Two encoders fine-tuned on the same pairs but of different families (MiniLM and MPNet, say) make
different mistakes, and the mean of their cosine similarities ranks unseen queries better than
either one. Serving both costs both. ``--ensemble-teacher DIR,DIR`` distils that mean into the one
encoder being trained, so a single model serves it.

The teacher is given as the embeddings folders (the output of ``firstlight embed``) of the member
encoders over the prepared catalogue; each folder's manifest names its model, which encodes the
training queries once, before training. A member's vectors are scaled by the square root of its
weight and the members are concatenated, so the dot product of two teacher vectors is the weighted
mean of the members' cosines. An ensemble already served (``firstlight ensemble``, then ``embed``)
teaches as one folder: its vectors are that concatenation, so the teacher is exactly what it serves.

Each training row then carries the teacher's row of its query and of each of its product texts
(``teacher_query``, ``teacher_positive``, ...: indices into two matrices that reach the workers
through Ray's object store). The loss adds ``ensemble_distil_weight`` x KL(teacher || student)
over every candidate InfoNCE scores for a query (the global batch's positives and hard negatives,
masked the same way), the teacher's scores divided by ``ensemble_temperature`` and the student's
times InfoNCE's scale before each softmax. Unlike ``--distil-index-dir`` (train/distil.py) it adds
no text to encode: the candidates are the batch's own.

On Home Depot it did not carry the ensemble's gain over (0.390 / 0.818 against 0.390 / 0.817
without it; benchmarks/RESULTS.md): on the training queries the members agree with the labels and
with each other. Off by default; serving the ensemble itself (train/ensemble_encoder.py) keeps it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from firstlight.errors import ConfigError

log = logging.getLogger(__name__)

PREFIX = "teacher_"  # per-row index columns: teacher_query, teacher_positive, teacher_negative, ...


def parse_members(dirs: str, weights: str) -> list[tuple[str, float]]:
    """(embeddings folder, weight) per member, weights summing to 1; a clear error for bad input."""
    folders = [d.strip() for d in dirs.split(",") if d.strip()]
    if not folders:
        raise ConfigError("ensemble_teacher", "names no embeddings folder",
                          "pass comma-separated outputs of `firstlight embed`, one per teacher encoder")
    for folder in folders:
        if not (Path(folder) / "manifest.json").exists():
            raise ConfigError("ensemble_teacher", f"{folder} is not a FirstLight embeddings folder (no manifest.json)",
                              "run `firstlight embed --model TEACHER` on this prepared catalogue and pass its output")
    from train.ensemble_encoder import scaled_weights

    values = weights.split(",") if weights else []
    return list(zip(folders, scaled_weights(values, len(folders), "ensemble_weights", "--ensemble-weights")))


def teacher_matrices(members: list[tuple[str, float]], queries: list[str], catalogue: pd.DataFrame,
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(query matrix, product matrix): rows in the order of ``queries`` and of ``catalogue``, each the
    members' unit vectors times sqrt(weight), concatenated (float16: half the object-store bytes)."""
    from data_pipeline.embed import load_embeddings
    from train.encoder import TextEncoder
    from train.ensemble_encoder import join_weighted

    q_parts, p_parts = [], []
    for folder, weight in members:
        model = json.loads((Path(folder) / "manifest.json").read_text()).get("model")
        ids, vectors = load_embeddings(Path(folder) / "vectors")
        row = {p: i for i, p in enumerate(ids)}
        missing = [p for p in catalogue["product_id"] if p not in row]
        if missing or not model:
            raise ConfigError("ensemble_teacher", f"{folder} lacks {len(missing)} of this catalogue's products "
                              f"(e.g. {missing[:3]})" if missing else f"{folder}'s manifest names no model",
                              "embed the same prepared catalogue with the teacher (`firstlight embed`)")
        p_parts.append(vectors[[row[p] for p in catalogue["product_id"]]])
        log.info("[train] ensemble teacher: %s (weight %.2f) encodes %d training queries", model, weight, len(queries))
        q_parts.append(TextEncoder.load(model).encode(queries, batch_size=256, progress=f"[train] teacher {model}"))
    weights = [w for _, w in members]
    return join_weighted(q_parts, weights).astype(np.float16), join_weighted(p_parts, weights).astype(np.float16)


def add_teacher_rows(pairs: pd.DataFrame, members, catalogue: pd.DataFrame, text_columns: list[str]):
    """``pairs`` with a ``teacher_<column>`` row index per text column, and the two teacher matrices.

    Product texts are looked up by text (a catalogue that lists one title under several ids gives
    them one vector); an empty text (no hard negative) gets row 0, which the loss masks anyway."""
    queries = sorted(set(pairs["query"]))
    q_matrix, p_matrix = teacher_matrices(members, queries, catalogue)
    q_row = {q: i for i, q in enumerate(queries)}
    p_row = {}
    for i, t in enumerate(catalogue["text"]):
        p_row.setdefault(t, i)
    pairs = pairs.copy()
    pairs[PREFIX + "query"] = pairs["query"].map(q_row).astype(np.int64)
    for column in text_columns:
        rows = pairs[column].map(p_row)
        unknown = rows.isna() & (pairs[column] != "")
        if unknown.any():
            raise ConfigError("ensemble_teacher", f"{int(unknown.sum())} training {column} texts are not in the "
                              "prepared catalogue", "embed the teachers over the catalogue the pairs come from")
        pairs[PREFIX + column] = rows.fillna(0).astype(np.int64)
    return pairs, q_matrix, p_matrix


def teacher_vectors(batch: dict, matrices, names: list[str]) -> dict:
    """The teacher's vectors of a batch: {"query": (B, D), "positive": (B, D), "negative": (k*B, D)},
    the negatives column after column as the loss concatenates them (float32 torch tensors)."""
    import torch

    q_matrix, p_matrix = matrices
    out = {"query": torch.from_numpy(q_matrix[batch[PREFIX + "query"].numpy()].astype(np.float32)),
           "positive": torch.from_numpy(p_matrix[batch[PREFIX + "positive"].numpy()].astype(np.float32))}
    if names:
        rows = np.concatenate([batch[PREFIX + n].numpy() for n in names])
        out["negative"] = torch.from_numpy(p_matrix[rows].astype(np.float32))
    return out
