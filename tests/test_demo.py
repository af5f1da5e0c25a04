"""First-click personalisation, 'why', and the demo page in a real browser, over a running app."""

from __future__ import annotations

import json

import pytest
import requests

from tests.serving import TOKEN, artifacts, free_port, post, served, small_app  # noqa: F401 - the shared fixture
from tests.test_serve_ranking import reranker_dir  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.serving]  # a slow kind: the quick tier (-m 'not slow') leaves these out


@pytest.fixture(scope="module")
def app(artifacts, reranker_dir):  # noqa: F811
    root, _ = artifacts
    cfg = small_app({"index_dir": str(root / "index"), "state_dir": str(root / "demo_state"),
                     "runtime.backend": "fp32", "admin_token_file": str(root / "token"),
                     "rerank": {"model": str(reranker_dir), "depth": 5}, "limits.max_session_clicks": 3})
    with served(cfg) as url:
        yield url


def ranked(url: str, text: str, clicked=None, k: int = 100) -> list[dict]:
    body = {"text": text, "k": k, "rerank": False, **({"session": {"clicked": clicked}} if clicked else {})}
    reply = post(url, "/v1/recommend", body)
    assert reply.status_code == 200, reply.text
    return reply.json()["items"]


BAD_SESSIONS = [
    ("an unknown id", {"clicked": ["no-such-product"]}, "session.clicked.0", "unknown_id"),
    ("too many clicks", {"clicked": ["a", "b", "c", "d"]}, "session.clicked", "out_of_range"),
    ("clicked not a list", {"clicked": "abc"}, "session.clicked", "wrong_type"),
    ("an id that is a number", {"clicked": [42]}, "session.clicked.0", "wrong_type"),
    ("an id with a control character", {"clicked": ["a\tb"]}, "session.clicked.0", "invalid_id"),
    ("an unknown session field", {"skipped": []}, "session.skipped", "unknown_field"),
    ("session not an object", ["a"], "session", "wrong_type"),
]


@pytest.mark.parametrize("name,session,field,code", BAD_SESSIONS, ids=[b[0] for b in BAD_SESSIONS])
def test_bad_sessions_get_their_documented_4xx(app, name, session, field, code):
    reply = requests.post(app + "/v1/recommend", data=json.dumps({"text": "drill", "session": session}),
                          headers={"Content-Type": "application/json"}, timeout=60)
    assert reply.status_code == 422, reply.text
    assert (reply.json()["error"]["field"], reply.json()["error"]["code"]) == (field, code)


def test_a_click_moves_a_known_related_product_up_and_is_not_shown_again(app, artifacts):  # noqa: F811
    from data_pipeline.index import ProductIndex

    root, catalogue = artifacts
    index = ProductIndex.load(root / "index", use_gpu="no")
    query = "tools for the garden"
    cold = [h["id"] for h in ranked(app, query)]
    moved = 0
    for clicked in cold[20:25]:  # products the words alone rank low
        _, neighbours = index.search(index.vectors([index.ids.index(clicked)]), 3)
        related = next(p for p in neighbours[0] if p != clicked)  # its nearest product: what "related" means here
        warm = ranked(app, query, [clicked])
        ids = [h["id"] for h in warm]
        assert clicked not in ids
        before = cold.index(related) if related in cold else len(cold)
        after = ids.index(related) if related in ids else len(ids)
        moved += after < before
        hit = next((h for h in warm if h["id"] == related), None)
        if hit is not None and hit["why"]["resembles"]:
            assert hit["why"]["resembles"]["id"] == clicked and "you clicked" in hit["why"]["text"]
    assert moved == 5


def test_why_names_the_matched_words_the_sources_and_the_reranker(app, artifacts):  # noqa: F811
    _, catalogue = artifacts
    title = catalogue["title"].iloc[11]
    reply = post(app, "/v1/recommend", {"text": title, "k": 5})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    top = body["items"][0]
    words = {w.lower() for w in title.split() if len(w) > 3 and w.isalpha()}
    assert words and words & set(top["why"]["matched"]), (words, top["why"])
    assert set(top["why"]["stages"]) <= {"lexical", "semantic"} and top["why"]["stages"]
    assert body["reranked"] and all(isinstance(i["why"]["reranker_moved"], int) for i in body["items"])
    assert all(i["why"]["text"] for i in body["items"])


def test_the_demo_page_in_a_real_browser(app, artifacts, tmp_path):  # noqa: F811
    from benchmarks.reliability.demo_page import drive

    screenshot = tmp_path / "demo.png"
    item = {"id": "demo-lantern", "title": "Brass storm lantern with glass chimney"}
    seen = drive(app, TOKEN, "cordless drill", item, screenshot, constraint_query="cordless drill, not corded")
    cold, warm = seen["cold"], seen["warm"]
    assert len(cold) == 10 and all(r["why"].startswith("Why: ") for r in cold)
    assert cold[0]["id"] not in [r["id"] for r in warm]  # the clicked product is gone
    assert [r["id"] for r in warm] != [r["id"] for r in cold[1:]]  # and the ranking moved, not just shifted
    assert "Personalised by 1 click" in seen["session"]
    # the click went to the event log, linked to the list it was made on, with the visit's id
    events_dir = artifacts[0] / "demo_state" / "events"
    logged = [json.loads(line) for path in (events_dir / "events").glob("date=*/*.jsonl")
              for line in path.read_text().splitlines()]
    click = next(e for e in logged if e["product_id"] == cold[0]["id"] and e["type"] == "click")
    shown = [json.loads(line) for path in (events_dir / "impressions").glob("date=*/*.jsonl")
             for line in path.read_text().splitlines()]
    listed = next(r for r in shown if r["request_id"] == click["request_id"])
    assert listed["session_id"].startswith("demo-") and listed["items"][click["position"] - 1] == cold[0]["id"]
    # the facet sidebar: ticking a brand leaves only that brand's products, and says so
    facet = seen["facet"]
    assert facet["field"] == "brand" and seen["faceted"]
    assert all(r["attributes"].get("brand") == facet["value"] for r in seen["faceted"])
    assert f"within brand in ({facet['value']})" in seen["faceted_status"]
    assert seen["admin"].startswith("Added demo-lantern")
    # found at once, among the top the (random, tiny) test reranker reorders
    assert "demo-lantern" in [r["id"] for r in seen["new"][:5]]
    assert screenshot.stat().st_size > 20_000
    # the words read as a constraint show as a chip; removing it removes the words and searches again
    assert seen["chips"] == [{"field": "text", "status": "applied", "text": "without 'corded'"}]
    assert not any("corded" in r["title"].lower().split() for r in seen["constrained"])
    assert seen["query_after"] == "cordless drill," and seen["chips_after"] == []
