"""One Ray hop for a query: with the default (int8, CPU) backend the Retriever encodes queries in
the search's own call, and the replies are those the Encoder's vectors give."""

from __future__ import annotations

import numpy as np
import pytest
import requests

from tests.serving import TOKEN, artifacts, post, served, small_app  # noqa: F401 - the shared fixture

pytestmark = pytest.mark.serving


@pytest.fixture(scope="module")
def one_hop(artifacts):  # noqa: F811
    root, _ = artifacts
    cfg = small_app({"index_dir": str(root / "index"), "state_dir": str(root / "one_hop_state"),
                     "admin_token_file": str(root / "token"), "first_stage.mode": "dense",
                     "first_stage.spell_correct": False})
    assert cfg.queries_in_retriever()  # the default backend on a CPU
    with served(cfg, name="firstlight-one-hop") as url:
        yield url


def test_queries_are_encoded_by_the_retriever_and_rank_as_the_int8_encoder_ranks(one_hop, artifacts):  # noqa: F811
    from data_pipeline.index import ProductIndex
    from model.encoder import TextEncoder
    from model.folders import DEFAULT_MODEL

    root, _ = artifacts
    queries = ["cordless drill", "white bathroom vanity", "我需要一个灯"]
    replies = [post(one_hop, "/v1/recommend", {"text": q, "k": 5}).json() for q in queries]
    assert all("encode" not in r["timing_ms"] and "retrieve" in r["timing_ms"] for r in replies)  # one call
    encoder = TextEncoder.load(DEFAULT_MODEL, backend="int8", device="cpu")
    # one at a time, as they were served: int8 quantises activations per batch, so a batch's company moves them
    vectors = np.vstack([encoder.encode([q], role="query") for q in queries])
    scores, ids = ProductIndex.load(root / "index").search(vectors, 5)
    for reply, expected, expected_scores in zip(replies, ids, scores):
        assert [i["id"] for i in reply["items"]] == list(expected)
        assert [i["score"] for i in reply["items"]] == pytest.approx(expected_scores.tolist(), abs=1e-4)
    assert requests.get(one_hop + "/readyz", timeout=60).status_code == 200


def test_a_product_added_through_the_api_is_found_by_a_query_the_retriever_encoded(one_hop):
    # the product's vector comes from the Encoder deployment, the query's from the Retriever: one space
    item = {"id": "one-hop-1", "title": "Zephyrine quartz countertop polish, 16 oz"}
    assert post(one_hop, "/v1/items", {"items": [item]}, token=TOKEN).status_code == 200
    hits = post(one_hop, "/v1/recommend", {"text": "Zephyrine quartz countertop polish", "k": 3}).json()["items"]
    assert hits[0]["id"] == "one-hop-1" and hits[0]["score"] > 0.8


def test_metrics_are_exported_under_the_documented_names_without_server_paths(one_hop):
    import time
    from pathlib import Path

    import ray

    port = ray._private.worker._global_node.metrics_export_port  # the node's Prometheus endpoint
    post(one_hop, "/v1/recommend", {"text": "drill", "k": 3})
    post(one_hop, "/v1/recommend", {"text": ""})  # a rejection, counted by reason
    deadline, text = time.monotonic() + 60, ""
    while time.monotonic() < deadline:  # exported every few seconds
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text
        if "ray_firstlight_retrieval_ms_count" in text and "ray_firstlight_rejected_requests" in text:
            break
        time.sleep(2)
    ours = [line for line in text.splitlines() if line.startswith("ray_firstlight_")]
    names = {line.split("{")[0] for line in ours}
    assert "ray_firstlight_retrieval_ms_count" in names, sorted(names)
    assert any(n.startswith("ray_firstlight_rejected_requests") for n in names), sorted(names)  # docs/serving.md
    assert 'reason="empty"' in text
    repo, home = str(Path(__file__).resolve().parents[1]), str(Path.home())
    assert not [line for line in ours if repo in line or home in line or ".py" in line]
