"""Distilling BM25 fused with a dense ranker into the encoder (train/distil.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from data_pipeline.prepare import PrepareConfig, run_prepare
from tests.test_train import _zero_shot_index, three_step_history, tiny_config


@pytest.fixture(scope="module")
def prepared(small_homedepot, tmp_path_factory, ray_session) -> Path:
    return run_prepare(PrepareConfig(dataset="homedepot", data_dir=str(small_homedepot),
                                     output_dir=str(tmp_path_factory.mktemp("distil_data") / "data")))


@pytest.fixture(scope="module")
def teacher_index(prepared, tiny_model_dir, tmp_path_factory) -> Path:
    return _zero_shot_index(prepared, tiny_model_dir, tmp_path_factory.mktemp("teacher"))


def test_distil_kl_is_zero_when_the_student_ranks_like_the_teacher_and_pulls_it_there():
    from train.distil import distil_kl

    torch.manual_seed(0)
    queries = F.normalize(torch.randn(4, 8), dim=-1)
    products = F.normalize(torch.randn(4, 3, 8), dim=-1)
    present = torch.tensor([True, True, True, False])
    scale, temperature = 20.0, 0.05
    # a teacher whose softmax is the student's own: nothing to learn
    same = torch.einsum("bd,bkd->bk", queries, products) * scale * temperature
    assert distil_kl(queries, products, same, present, scale, temperature).item() == pytest.approx(0.0, abs=1e-6)
    # a teacher that ranks the other way round: a positive loss, and a gradient step lowers it
    teacher = torch.tensor([[1.0, 0.2, 0.0]] * 4)
    products.requires_grad_()
    loss = distil_kl(queries, products, teacher, present, scale, temperature)
    assert loss.item() > 0.1
    loss.backward()
    assert products.grad[3].abs().sum() == 0  # a row without candidates takes no part
    stepped = F.normalize(products.detach() - 0.05 * products.grad, dim=-1)
    assert distil_kl(queries, stepped, teacher, present, scale, temperature) < loss
    # no row with candidates: zero, still part of the graph
    none = distil_kl(queries, products, teacher, torch.zeros(4, dtype=torch.bool), scale, temperature)
    assert none.item() == 0.0 and none.requires_grad


def test_distil_columns_are_found_in_pairs_tables_and_batches_in_order():
    from train.distil import distil_columns

    assert distil_columns(["query", "distil2", "distil1", "distil_teacher", "has_distil"]) == ["distil1", "distil2"]
    assert distil_columns(["distil10_ids", "distil2_ids", "distil2_mask", "negative_ids"]) == ["distil2", "distil10"]
    assert distil_columns(["query", "negative"]) == []


def test_pairs_carry_unjudged_teacher_products_ranked_below_the_positive(prepared, tiny_model_dir, teacher_index):
    from data_pipeline.prepare import load_catalogue, load_split
    from train.distil import TEACHER, fusion_teacher
    from train.pairs import build_pairs

    plain = build_pairs(prepared, tiny_config(prepared, tiny_model_dir, prepared.parent, hard_negatives="judged"))
    cfg = tiny_config(prepared, tiny_model_dir, prepared.parent, hard_negatives="judged",
                      distil_index_dir=str(teacher_index), distil_candidates=3, distil_depth=12)
    cfg.validate()
    pairs = build_pairs(prepared, cfg)
    # the same rows as without distillation, plus the distillation columns
    assert pairs[plain.columns].equals(plain)
    rows = pairs[pairs["has_distil"]]
    assert len(rows) > 0.9 * len(pairs)
    catalogue = load_catalogue(prepared)
    text = catalogue.set_index("product_id")["text"]
    judged = load_split(prepared, "train")
    judged_texts = {q: set(text[g["product_id"]]) for q, g in judged.groupby("query")}
    # the teacher for the very queries build_pairs asked about: batches of other queries pad differently,
    # which moves scores in the 6th digit and can swap near-ties
    teacher = fusion_teacher(sorted(judged["query"].unique()), teacher_index, catalogue, cfg.distil_depth,
                             cfg.distil_dense_weight)
    for _, row in rows.iterrows():
        candidates = [row[f"distil{j}"] for j in (1, 2, 3)]
        scores = row[TEACHER]
        assert len(set(candidates)) == 3  # distinct
        assert not set(candidates) & judged_texts[row["query"]]  # never a product a rater judged
        ranked = {text[p]: s for p, s in teacher[row["query"]]}
        assert [ranked[c] for c in candidates] == pytest.approx(list(scores[1:]), rel=1e-4)  # the teacher's own
        assert scores[0] == pytest.approx(teacher[row["query"]][0][1])  # the positive: the teacher's best
        assert all(0.0 <= s <= 1.0 for s in scores) and scores[0] >= max(scores[1:])
    # a query's rows see different candidates
    multi = rows.groupby("query").filter(lambda g: len(g) > 1)
    assert (multi.groupby("query")["distil1"].nunique() > 1).any()
    masked = pairs[~pairs["has_distil"]]
    assert (masked["distil1"] == "").all()


@pytest.mark.parametrize("grad_cache_chunk", [0, 4])
def test_distillation_adds_its_term_to_the_loss_in_both_step_kinds(prepared, tiny_model_dir, teacher_index,
                                                                   tmp_path, grad_cache_chunk):
    def run(out, **distil):
        return three_step_history(prepared, tiny_model_dir, out, grad_cache_chunk, hard_negatives="judged",
                                  dropout=False, length_window=0, **distil)

    plain = run(tmp_path / "plain")
    distilled = run(tmp_path / "distil", distil_index_dir=str(teacher_index), distil_weight=5.0)
    assert distilled["step"].tolist() == [1, 2, 3]
    assert distilled["loss"].notna().all() and (distilled["distil_kl"] > 0).all()
    assert "distil_kl" not in plain  # logged only where there is such a term
    # the same first batch (no regrouping by length, which counts the candidates) and weights:
    # InfoNCE alike, plus a KL term that is > 0
    assert distilled["loss"].iloc[0] > plain["loss"].iloc[0] + 1e-3
    # InfoNCE's negatives are unchanged: candidates are not in-batch negatives
    assert distilled["negatives_per_query"].tolist() == plain["negatives_per_query"].tolist()


@pytest.mark.parametrize("overrides, field", [
    (dict(distil_index_dir="no/such/index"), "distil_index_dir"),
    (dict(distil_candidates=0), "distil_candidates"),
    (dict(distil_depth=1), "distil_depth"),
    (dict(distil_dense_weight=1.5), "distil_dense_weight"),
    (dict(distil_temperature=0.0), "distil_temperature"),
])
def test_bad_distillation_settings_are_config_errors(prepared, tiny_model_dir, teacher_index, overrides, field):
    from firstlight.errors import ConfigError

    settings = {"distil_index_dir": str(teacher_index), **overrides}
    with pytest.raises(ConfigError, match=field):
        tiny_config(prepared, tiny_model_dir, prepared.parent, **settings).validate()
