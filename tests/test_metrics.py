"""Metrics on a small ranking computed by hand (linear-gain nDCG, gain = relevance - 1)."""

import math

import pandas as pd
import pytest

from evaluation.metrics import (
    evaluate_candidates,
    evaluate_run,
    judged_from_frame,
    tune_fusion,
)


@pytest.fixture()
def judged():
    return judged_from_frame(pd.DataFrame({
        "query": ["q1", "q1", "q1", "q2", "q2", "q3"],
        "product_id": ["a", "b", "c", "c", "d", "e"],
        "relevance": [3.0, 2.0, 1.0, 2.67, 1.0, 2.0],  # q3 has no relevant product: not evaluated
    }))


def test_query_set_is_queries_with_a_relevant_product(judged):
    assert judged.queries == ["q1", "q2"]
    assert judged.binary == {"q1": {"a": 1}, "q2": {"c": 1}}


def test_metrics_match_hand_computation(judged):
    run = {"q1": {"a": 0.9, "x": 0.8, "b": 0.7}, "q2": {"x": 1.0, "c": 0.5}}
    # q1: gains a=2, b=1 ranked 1st and 3rd: DCG = 2 + 1/log2(4); ideal = 2 + 1/log2(3)
    ndcg_q1 = (2 + 1 / math.log2(4)) / (2 + 1 / math.log2(3))
    # q2: gain c = 1.67 at rank 2: DCG = 1.67/log2(3); ideal = 1.67
    ndcg_q2 = 1 / math.log2(3)
    result = evaluate_run(run, judged)
    assert result["ndcg@10"] == pytest.approx((ndcg_q1 + ndcg_q2) / 2, abs=1e-9)
    assert result["recall@100"] == pytest.approx(1.0)
    assert result["mrr@10"] == pytest.approx((1 + 1 / 2) / 2)
    per_query = evaluate_run(run, judged, per_query=True)
    assert per_query["ndcg@10"] == pytest.approx([ndcg_q1, ndcg_q2])
    assert per_query["mrr@10"] == pytest.approx([1.0, 0.5])


def test_missing_query_and_missed_relevant_product_score_zero(judged):
    result = evaluate_run({"q1": {"x": 1.0, "b": 0.5}}, judged, per_query=True)
    assert result["recall@100"] == [0.0, 0.0]
    assert result["mrr@10"] == [0.0, 0.0]
    assert result["ndcg@10"][0] == pytest.approx((1 / math.log2(3)) / (2 + 1 / math.log2(3)))
    assert result["ndcg@10"][1] == 0.0


def test_rerank_protocol_uses_only_judged_candidates(judged):
    # unjudged 'x' is ignored; q1 orders b, a, c -> DCG = 1 + 2/log2(3); q2 orders c, d -> perfect
    run = {"q1": {"x": 9.0, "b": 0.9, "a": 0.8, "c": 0.1}, "q2": {"c": 0.2, "d": 0.1}}
    ideal = 2 + 1 / math.log2(3)
    assert evaluate_candidates(run, judged) == pytest.approx(((1 + 2 / math.log2(3)) / ideal + 1.0) / 2)


def test_fusion_tuning_follows_the_better_run(judged):
    from ranking.fusion import fuse_runs

    good = {"q1": {"a": 0.9, "b": 0.8, "c": 0.1}, "q2": {"c": 0.9, "d": 0.1}}
    bad = {"q1": {"c": 9.0, "b": 5.0, "a": 1.0}, "q2": {"d": 9.0, "c": 1.0}}
    weights = tune_fusion([bad, good], judged, "wsum")["weights"]
    assert weights[1] > weights[0]  # the run that ranks the relevant products first gets the weight
    assert evaluate_run(fuse_runs([bad, good], "wsum", {"weights": weights}), judged)["ndcg@10"] == pytest.approx(
        evaluate_run(good, judged)["ndcg@10"])
    assert tune_fusion([bad, good], judged, "rrf")["k"] >= 1


def test_paired_bootstrap_interval():
    import numpy as np

    from evaluation.compare import paired_bootstrap

    rng = np.random.default_rng(0)
    a = rng.random(300)
    same = paired_bootstrap(a, a, n_resamples=1000)
    assert same["mean_diff"] == 0.0 and same["ci_low"] == same["ci_high"] == 0.0
    better = paired_bootstrap(a + 0.05 + 0.01 * rng.standard_normal(300), a, n_resamples=1000)
    assert better["ci_low"] > 0.03 and better["ci_high"] < 0.07
    with pytest.raises(ValueError, match="same queries"):
        paired_bootstrap(a, a[:10])
