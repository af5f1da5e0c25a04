"""Learning from logged clicks: the simulator, position bias from swaps, pairs, and `train --events`
with no judgments file anywhere."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from benchmarks.events.clicks import ClickModel, run_in_process
from common.errors import ConfigError
from data_pipeline.events import read_log
from train.event_pairs import ClickPairs, click_pairs, clicked, estimate_bias, held_out

PRODUCTS = [f"p{i}" for i in range(40)]
TEXT = pd.Series({p: f"product {p} text" for p in PRODUCTS})


def simulated(tmp_path, sessions=6000, seed=1, swap_share=0.3, grades=None, eta=1.0):
    """A log of shoppers on 20 queries, each always shown the same 10 products."""
    rankings = {f"query {q}": PRODUCTS[q:q + 10] for q in range(20)}
    grades = grades if grades is not None else {q: {p: 2.5 for p in ranked} for q, ranked in rankings.items()}
    counts = run_in_process(rankings, grades, sessions, tmp_path, seed=seed, swap_share=swap_share,
                            model=ClickModel(eta=eta))
    return counts, *read_log(tmp_path)


def test_the_simulator_is_seeded_and_logs_what_the_server_logs(tmp_path, ray_session):
    first, impressions, events = simulated(tmp_path / "a", sessions=500)
    again, impressions_again, events_again = simulated(tmp_path / "b", sessions=500)
    assert first == again and first["sessions"] == 500 and first["clicks"] > 0
    assert impressions["items"].tolist() == impressions_again["items"].tolist()
    assert events[["type", "product_id", "position"]].values.tolist() == \
        events_again[["type", "product_id", "position"]].values.tolist()
    assert set(events["type"]) <= {"click", "add_to_cart", "purchase"}
    shown = dict(zip(impressions["request_id"], impressions["items"]))
    assert all(shown[r][p - 1] == product for r, product, p in events[["request_id", "product_id", "position"]].values)


@pytest.mark.parametrize("eta", [0.7, 1.4])
def test_position_bias_is_recovered_from_swaps_alone(tmp_path, ray_session, eta):
    _, impressions, events = simulated(tmp_path, sessions=12000, eta=eta)
    bias = estimate_bias(impressions, clicked(events), min_swaps=100)
    assert abs(bias.eta - eta) < 0.2, bias
    assert set(bias.ratios) == set(range(2, 11))


def test_too_few_swaps_name_the_setting_that_gives_them(tmp_path, ray_session):
    _, impressions, events = simulated(tmp_path, sessions=300, swap_share=0.0)
    with pytest.raises(ConfigError, match="events.swap_share"):
        click_pairs(impressions, events, TEXT, ClickPairs(correction="ipw"), seed=0)
    pairs, _, summary = click_pairs(impressions, events, TEXT, ClickPairs(correction="naive"), seed=0)
    assert len(pairs) == summary["pairs"] > 0 and summary["eta"] is None


def test_clicks_become_pairs_with_skipped_negatives_and_held_out_queries():
    kept = next(f"query {i}" for i in range(1000) if not held_out(f"query {i}", 0.1))
    val_query = next(f"query {i}" for i in range(1000) if held_out(f"query {i}", 0.1))
    impressions = pd.DataFrame([
        {"request_id": "r1", "query": kept, "items": ["p1", "p2", "p3", "p4"], "swap": None},
        {"request_id": "r2", "query": kept, "items": ["p1", "p2", "p3", "p4"], "swap": None},
        {"request_id": "r3", "query": val_query, "items": ["p5", "p6"], "swap": None}])
    events = pd.DataFrame([
        {"request_id": "r1", "type": "click", "product_id": "p3"},
        {"request_id": "r1", "type": "click", "product_id": "p3"},  # a double click counts once
        {"request_id": "r2", "type": "click", "product_id": "p1"},
        {"request_id": "r2", "type": "purchase", "product_id": "p1"},
        {"request_id": "r3", "type": "click", "product_id": "p6"}])
    pairs, val, summary = click_pairs(impressions, events, TEXT, ClickPairs(correction="naive", val_share=0.1), 0)
    got = sorted(zip(pairs["positive"], pairs["negative"]))
    # p3 clicked under skipped p1, p2: the nearest skipped above is the negative; p1 clicked first: one below
    assert got == [(TEXT["p1"], TEXT["p2"]), (TEXT["p3"], TEXT["p2"])]
    assert val.values.tolist() == [[val_query, "p6", 3.0]] and summary["val_queries"] == 1


def test_inverse_propensity_weights_lift_clicks_from_low_positions(tmp_path, ray_session):
    # every product equally relevant: naive pairs follow the position bias, corrected ones are flat
    _, impressions, events = simulated(tmp_path, sessions=8000)
    naive, _, _ = click_pairs(impressions, events, TEXT, ClickPairs(correction="naive", val_share=0.0), seed=0)
    ipw, _, summary = click_pairs(impressions, events, TEXT, ClickPairs(correction="ipw", val_share=0.0), seed=0)
    ranked = {f"query {q}": [TEXT[p] for p in PRODUCTS[q:q + 10]] for q in range(20)}  # as simulated() ranks

    def top_share(pairs):  # the share of pairs on clicks of the ranking's first product
        return sum(ranked[q].index(t) == 0 for q, t in zip(pairs["query"], pairs["positive"])) / len(pairs)

    # naive: the first product draws 1 / H(10) = 34% of clicks where unswapped (26% with 30% swapped);
    # corrected, every product about 10%
    assert top_share(naive) > 0.22 and top_share(ipw) < 0.14, (top_share(naive), top_share(ipw))
    assert 0.7 < summary["eta"] < 1.3


@pytest.mark.training
def test_training_on_events_reads_no_judgments(tmp_path, tiny_model_dir, small_homedepot, ray_session):
    from data_pipeline.prepare import (
        PrepareConfig,
        load_catalogue,
        load_split,
        run_prepare,
    )
    from tests.test_train import tiny_config
    from train.driver import run_train

    prepared = run_prepare(PrepareConfig(dataset="homedepot", data_dir=str(small_homedepot),
                                         output_dir=str(tmp_path / "data")))
    judged = load_split(prepared, "train").groupby(["query", "product_id"], as_index=False)["relevance"].mean()
    ids = set(load_catalogue(prepared)["product_id"])
    grades = {q: dict(zip(g["product_id"], g["relevance"])) for q, g in judged.groupby("query")}
    rankings = {q: ([p for p in g if p in ids] + sorted(ids))[:10] for q, g in grades.items()}
    run_in_process(rankings, grades, 3000, tmp_path / "log", seed=0, swap_share=0.1)
    shutil.rmtree(Path(prepared) / "judgments")  # nothing to read: a run that reads judgments fails
    cfg = tiny_config(prepared, tiny_model_dir, tmp_path / "run", events=str(tmp_path / "log"), num_workers=1,
                      cpus_per_worker=1, grad_accum=1, max_steps=4, checkpoint_every=2, val_queries=10,
                      hard_negatives="judged")
    model = Path(run_train(cfg))
    assert (model / "model.safetensors").exists()
    assert json.loads((model / "firstlight.json").read_text())["val_ndcg@10"] is not None
    assert not (Path(prepared) / "judgments").exists()


def test_clicks_judge_products_by_their_debiased_click_rate(tmp_path, ray_session):
    from train.event_pairs import click_judgments

    grades = {f"query {q}": {p: (3.0 if i % 2 else 1.5) for i, p in enumerate(PRODUCTS[q:q + 10])} for q in range(20)}
    _, impressions, events = simulated(tmp_path, sessions=8000, grades=grades)
    train, held, summary = click_judgments(impressions, events, ClickPairs(correction="ipw", val_share=0.2))
    assert len(held) and len(train) and set(train["query"]).isdisjoint(held["query"])
    judged = pd.concat([train, held])
    truth = judged.apply(lambda r: grades[r["query"]][r["product_id"]], axis=1)
    # relevant products (3.0) judged above irrelevant ones (1.5) wherever they were shown
    assert judged[truth == 3.0]["relevance"].mean() > judged[truth == 1.5]["relevance"].mean() + 0.8
    assert judged["relevance"].between(1.0, 3.0).all() and 0.7 < summary["eta"] < 1.3
