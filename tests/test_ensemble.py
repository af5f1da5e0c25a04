"""Distilling an ensemble of fine-tuned encoders into one (train/ensemble.py, train.loss.ensemble_kl)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from data_pipeline.prepare import PrepareConfig, run_prepare
from tests.test_train import three_step_history, tiny_config


@pytest.fixture(scope="module")
def prepared(small_homedepot, tmp_path_factory, ray_session) -> Path:
    return run_prepare(PrepareConfig(dataset="homedepot", data_dir=str(small_homedepot),
                                     output_dir=str(tmp_path_factory.mktemp("ensemble_data") / "data")))


@pytest.fixture(scope="module")
def teacher_embeddings(prepared, tiny_model_dir, tmp_path_factory) -> Path:
    from data_pipeline.embed import EmbedConfig, run_embed

    return run_embed(EmbedConfig(prepared_dir=str(prepared), output_dir=str(tmp_path_factory.mktemp("teacher") / "emb"),
                                 model=str(tiny_model_dir)))


def test_ensemble_kl_is_zero_for_a_teacher_that_scores_like_the_student_and_pulls_toward_it():
    from train.loss import ensemble_kl

    g = torch.Generator().manual_seed(0)
    q, p, n = (F.normalize(torch.randn(6, 8, generator=g), dim=-1) for _ in range(3))
    mask = torch.tensor([True, False, True, True, False, True])
    keys = {"query": torch.tensor([1, 2, 3, 4, 5, 1]), "positive": torch.arange(10, 16),
            "negative": torch.tensor([20, 21, 12, 23, 24, 25])}
    # the student's own vectors, at the student's temperature: nothing to learn
    same = {"query": q, "positive": p, "negative": n}
    assert ensemble_kl(q, p, n, mask, same, scale=20.0, temperature=0.05, keys=keys).item() == pytest.approx(0, abs=1e-6)
    # another teacher: a positive KL, finite through the masked entries, and a step toward it lowers it
    other = {k: F.normalize(torch.randn(6, 8, generator=g), dim=-1) for k in ("query", "positive", "negative")}
    q.requires_grad_()
    kl = ensemble_kl(q, p, n, mask, other, keys=keys)
    assert kl.item() > 0.05
    kl.backward()
    assert torch.isfinite(q.grad).all()
    stepped = F.normalize(q.detach() - 0.05 * q.grad, dim=-1)
    assert ensemble_kl(stepped, p, n, mask, other, keys=keys) < kl
    # the softmax runs over what InfoNCE keeps: a masked negative's teacher score changes nothing
    moved = dict(other, negative=other["negative"].clone())
    moved["negative"][1] = -moved["negative"][1]
    assert ensemble_kl(q, p, n, mask, moved, keys=keys).item() == pytest.approx(kl.item(), rel=1e-6)


def test_teacher_rows_point_at_the_weighted_members_vectors(prepared, tiny_model_dir, teacher_embeddings):
    """One model listed twice at weights 1 and 3: the teacher's dot product is that model's cosine."""
    from data_pipeline.embed import load_embeddings
    from data_pipeline.prepare import load_catalogue
    from train.encoder import TextEncoder
    from train.pairs import build_pairs

    plain = build_pairs(prepared, tiny_config(prepared, tiny_model_dir, prepared.parent, hard_negatives="judged"))
    cfg = tiny_config(prepared, tiny_model_dir, prepared.parent, hard_negatives="judged",
                      ensemble_teacher=f"{teacher_embeddings},{teacher_embeddings}", ensemble_weights="1,3")
    cfg.validate()
    pairs = build_pairs(prepared, cfg)
    q_matrix, p_matrix = pairs.attrs["teacher"]
    assert pairs[plain.columns].equals(plain)  # the same rows, plus the teacher's row indices
    assert q_matrix.dtype == p_matrix.dtype == np.float16 and p_matrix.shape[1] == 2 * 32
    catalogue = load_catalogue(prepared)
    ids, vectors = load_embeddings(teacher_embeddings / "vectors")
    vector = dict(zip(ids, vectors))
    by_text = {t: vector[p] for p, t in zip(catalogue["product_id"], catalogue["text"])}
    # member 1 is sqrt(0.25) x the vector, member 2 sqrt(0.75) x it
    expected = np.stack([np.concatenate([0.5 * by_text[t], np.sqrt(0.75) * by_text[t]]) for t in pairs["positive"]])
    np.testing.assert_allclose(p_matrix[pairs["teacher_positive"]], expected, atol=2e-3)
    rows = pairs[pairs["has_negative"]]
    np.testing.assert_allclose(p_matrix[rows["teacher_negative"], :32], 0.5 * np.stack([by_text[t] for t in rows["negative"]]),
                               atol=2e-3)
    encoder = TextEncoder.load(str(tiny_model_dir))
    head = pairs.head(20)
    teacher = (q_matrix[head["teacher_query"]].astype(np.float32) * p_matrix[head["teacher_positive"]]).sum(1)
    cosine = (encoder.encode(head["query"].tolist()) * encoder.encode(head["positive"].tolist())).sum(1)
    np.testing.assert_allclose(teacher, cosine, atol=5e-3)


def test_one_ensemble_models_embeddings_teach_as_its_members_embeddings_do(prepared, tiny_model_dir, wide_model_dir,
                                                                           teacher_embeddings, tmp_path):
    """`--ensemble-teacher ENSEMBLE_EMB` (one folder, embedded with a `firstlight ensemble` model) and
    `--ensemble-teacher MEMBER_A_EMB,MEMBER_B_EMB --ensemble-weights` give the same teacher."""
    from data_pipeline.embed import EmbedConfig, run_embed
    from train.ensemble_encoder import EnsembleConfig, run_ensemble
    from train.pairs import build_pairs

    ensemble = run_ensemble(EnsembleConfig(models=(str(tiny_model_dir), str(wide_model_dir)), weights=(1, 3),
                                           output_dir=str(tmp_path / "ensemble")))
    embed = lambda model, out: run_embed(EmbedConfig(prepared_dir=str(prepared), output_dir=str(tmp_path / out),  # noqa: E731
                                                     model=str(model)))
    wide, joined = embed(wide_model_dir, "wide"), embed(ensemble, "joined")
    by_members = build_pairs(prepared, tiny_config(prepared, tiny_model_dir, prepared.parent, hard_negatives="judged",
                                                   ensemble_teacher=f"{teacher_embeddings},{wide}",
                                                   ensemble_weights="1,3"))
    by_ensemble = build_pairs(prepared, tiny_config(prepared, tiny_model_dir, prepared.parent,
                                                    hard_negatives="judged", ensemble_teacher=str(joined)))
    assert by_members.equals(by_ensemble)  # the same rows and teacher row indices
    for a, b in zip(by_members.attrs["teacher"], by_ensemble.attrs["teacher"]):
        assert a.shape == b.shape and a.shape[1] == 32 + 48
        np.testing.assert_allclose(a.astype(np.float32), b.astype(np.float32), atol=2e-3)


@pytest.mark.parametrize("grad_cache_chunk", [0, 4])
def test_ensemble_distillation_adds_its_term_in_both_step_kinds(prepared, tiny_model_dir, teacher_embeddings,
                                                                tmp_path, grad_cache_chunk):
    def run(out, **teacher):
        return three_step_history(prepared, tiny_model_dir, out, grad_cache_chunk, hard_negatives="judged",
                                  dropout=False, length_window=0, **teacher)

    plain = run(tmp_path / "plain")
    # the teacher is the student's own starting model at a sharper temperature: a KL above zero
    taught = run(tmp_path / "taught", ensemble_teacher=str(teacher_embeddings), ensemble_temperature=0.01)
    assert taught["step"].tolist() == [1, 2, 3]
    assert "ensemble_kl" not in plain
    assert (taught["ensemble_kl"] >= 0).all() and taught["ensemble_kl"].iloc[0] > 1e-3
    assert taught["loss"].iloc[0] > plain["loss"].iloc[0] + 1e-4
    assert taught["negatives_per_query"].tolist() == plain["negatives_per_query"].tolist()


@pytest.mark.parametrize("overrides, field", [
    (dict(ensemble_teacher="no/such/embeddings"), "ensemble_teacher"),
    (dict(ensemble_teacher=" , "), "ensemble_teacher"),
    (dict(ensemble_weights="1,2"), "ensemble_weights"),
    (dict(ensemble_weights="-1"), "ensemble_weights"),
    (dict(ensemble_weights="half"), "ensemble_weights"),
    (dict(ensemble_temperature=0.0), "ensemble_temperature"),
    (dict(ensemble_distil_weight=0.0), "ensemble_distil_weight"),
])
def test_bad_ensemble_settings_are_config_errors(prepared, tiny_model_dir, teacher_embeddings, overrides, field):
    from firstlight.errors import ConfigError

    settings = {"ensemble_teacher": str(teacher_embeddings), **overrides}
    with pytest.raises(ConfigError, match=field):
        tiny_config(prepared, tiny_model_dir, prepared.parent, **settings).validate()
