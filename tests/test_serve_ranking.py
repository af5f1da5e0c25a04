"""The served ranking path over real HTTP: hybrid first stage, Reranker deployment, its fallback."""

from __future__ import annotations

import numpy as np
import pytest
import requests
import torch

from model.reranker import Reranker, export_reranker, new_reranker
from tests.serving import TOKEN, artifacts, free_port, post, served, small_app  # noqa: F401 - the shared fixture

pytestmark = pytest.mark.serving  # a slow kind: the quick tier (-m 'not slow') leaves these out


@pytest.fixture(scope="module")
def reranker_dir(tmp_path_factory, tiny_model_dir):
    from transformers import AutoTokenizer

    torch.manual_seed(0)  # a random tiny cross-encoder: distinct scores, cheap on 2 cores
    out = tmp_path_factory.mktemp("served_reranker") / "model"
    return export_reranker(new_reranker(str(tiny_model_dir)), AutoTokenizer.from_pretrained(tiny_model_dir), out,
                           max_length=64)


@pytest.fixture(scope="module")
def ranked_service(artifacts, reranker_dir):  # noqa: F811
    root, _ = artifacts
    cfg = small_app({"index_dir": str(root / "index"), "state_dir": str(root / "ranking_state"),
                     "admin_token_file": str(root / "token"), "runtime.backend": "fp32",
                     "rerank": {"model": str(reranker_dir), "depth": 8, "weight": 1.0}})
    with served(cfg, name="firstlight-ranked") as url:
        yield url


def test_the_reranker_reorders_the_first_stage_by_its_scores(ranked_service, artifacts, reranker_dir):  # noqa: F811
    _, catalogue = artifacts
    text = dict(zip(catalogue["product_id"], catalogue["text"]))
    first = post(ranked_service, "/v1/recommend", {"text": "cordless drill", "k": 8, "rerank": False}).json()
    assert first["reranked"] is False and first["fallback"] is None
    served_reply = post(ranked_service, "/v1/recommend", {"text": "cordless drill", "k": 8}).json()
    assert served_reply["reranked"] is True and "rerank" in served_reply["timing_ms"]
    ids = [i["id"] for i in first["items"]]
    reranker = Reranker.load(str(reranker_dir), max_length=128, device="cpu", backend="fp32")
    scores = reranker.score(first["query"] or "cordless drill", [text[p] for p in ids])
    expected = [ids[i] for i in np.argsort(-scores, kind="stable")]
    assert [i["id"] for i in served_reply["items"]] == expected != ids  # the same products, reordered
    assert [i["score"] for i in served_reply["items"]] == pytest.approx(sorted(scores, reverse=True), abs=1e-4)


def test_an_added_product_is_found_by_its_words_alone_and_a_deleted_one_is_gone(ranked_service):
    item = {"id": "fl-lex-1", "title": "Frostline QZX-5531 replacement hinge kit"}
    assert post(ranked_service, "/v1/items", {"items": [item]}, token=TOKEN).status_code == 200
    for rerank in (False, True):
        hits = post(ranked_service, "/v1/recommend", {"text": "qzx-5531", "k": 8, "rerank": rerank}).json()["items"]
        assert "fl-lex-1" in [h["id"] for h in hits]
    stats = requests.get(ranked_service + "/v1/stats", timeout=30).json()["index"]
    assert stats["first_stage"] == "hybrid" and stats["added"] == 1
    reply = requests.delete(ranked_service + "/v1/items/fl-lex-1", headers={"Authorization": f"Bearer {TOKEN}"},
                            timeout=30)
    assert reply.status_code == 200
    hits = post(ranked_service, "/v1/recommend", {"text": "qzx-5531 hinge kit", "k": 50, "rerank": False}).json()
    assert "fl-lex-1" not in [h["id"] for h in hits["items"]]


@pytest.mark.parametrize("body, field", [({"text": "drill", "rerank": "yes"}, "rerank"),
                                         ({"text": "drill", "rerank": 1}, "rerank"),
                                         ({"texts": ["drill"], "rerank": None}, "rerank")])
def test_bad_rerank_switch_gets_a_422_naming_it(ranked_service, body, field):
    path = "/v1/recommend/batch" if "texts" in body else "/v1/recommend"
    reply = post(ranked_service, path, body)
    assert reply.status_code == 422 and reply.json()["error"]["field"] == field
    assert reply.json()["error"]["code"] == "wrong_type"
