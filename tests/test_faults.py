"""Faults on a running app, over real HTTP: schemathesis fuzzing; replicas killed under load; kill -9
of every replica right after acknowledged changes; a torn change log; a full disk; an index folder
that vanishes after a reload. Two replicas of every deployment, as in the production config."""

from __future__ import annotations

import json
import os
import resource
import shutil
import threading
import time
from pathlib import Path

import pytest
import requests

from benchmarks.reliability.chaos import (
    LoadRecord,
    kill_one,
    replica_pids,
    run_load,
    wait_for_replicas,
)
from benchmarks.reliability.fuzz_api import fuzz
from serve.config import ServeConfig
from tests.serving import TOKEN, artifacts, free_port, post, served, small_app  # noqa: F401 - the shared fixture
from tests.test_serve_ranking import reranker_dir  # noqa: F401

pytestmark = [pytest.mark.faults, pytest.mark.serving]  # a slow kind: the quick tier (-m 'not slow') leaves these out


@pytest.fixture(scope="module")
def resilient(artifacts, reranker_dir):  # noqa: F811
    root, _ = artifacts
    two = {"min_replicas": 2, "max_replicas": 2, "num_cpus": 0.2}  # the production shape: two of each
    cfg = small_app({"index_dir": str(root / "index"), "state_dir": str(root / "fault_state"),
                     "runtime.backend": "fp32", "admin_token_file": str(root / "token"),
                     "rerank": {"model": str(reranker_dir), "depth": 5}, "encoder": two, "reranker": two,
                     "retriever": two, "limits.max_batch_texts": 8})
    with served(cfg) as url:
        yield url, cfg


def ready(url: str, timeout_s: float = 180) -> bool:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            if requests.get(url + "/readyz", timeout=20).status_code == 200:
                return True
        except requests.RequestException:
            pass
        time.sleep(1)
    return False


def test_fuzzing_finds_no_server_error_and_the_document_holds(resilient, tmp_path):
    url, _ = resilient
    for token in (None, TOKEN):
        result = fuzz(url, token, max_examples=15, report_dir=tmp_path)
        assert result["server_errors"] == 0 and result["passed"], result["summary"]
        assert result["requests"] >= 150 and 200 in result["statuses"], result
    assert ready(url, 30)


@pytest.mark.parametrize("deployment", ["Encoder", "Retriever", "Reranker"])
def test_losing_one_replica_under_load_fails_no_request(resilient, artifacts, deployment):  # noqa: F811
    url, _ = resilient
    _, catalogue = artifacts
    bodies = [{"text": title, "k": 5} for title in catalogue["title"].head(40)]
    record, stop = LoadRecord(), threading.Event()
    threads = run_load(url, bodies, clients=4, stop=stop, record=record)
    time.sleep(3)
    killed_at = time.time()
    kill_one(deployment)
    time.sleep(6)
    stop.set()
    for thread in threads:
        thread.join()
    after = record.summary(since=killed_at)
    assert after["requests"] >= 20 and after["failed"] == 0, after
    assert wait_for_replicas(deployment, 2)  # Serve brings the lost replica back


def test_acknowledged_changes_survive_kill_9_of_every_replica(resilient):
    url, cfg = resilient
    acknowledged = []

    def writer(n: int) -> None:
        for i in range(5):
            item = {"id": f"ack-{n}-{i}", "title": f"Walnut spice rack number {n} {i}"}
            if post(url, "/v1/items", {"items": [item]}, token=TOKEN).status_code == 200:
                acknowledged.append(item["id"])

    writers = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    assert len(acknowledged) == 20
    rule = {"id": "survivor", "action": "pin", "ids": [acknowledged[0]], "position": 1, "query": "*drill*"}
    assert post(url, "/v1/admin/rules", {"rules": [rule]}, token=TOKEN).status_code == 200
    clicks = acknowledged_clicks(url, 4, 10)  # and clicks, logged by the gateway
    for deployment in ("Gateway", "Encoder", "Retriever", "Reranker"):  # the whole app, at once
        for pid in replica_pids(deployment):
            os.kill(pid, 9)
    assert ready(url)
    for deployment, count in (("Retriever", 2), ("Encoder", 2)):
        assert wait_for_replicas(deployment, count)
    found = set()
    for item_id in acknowledged:
        n, i = item_id.split("-")[1:]
        reply = post(url, "/v1/recommend", {"text": f"walnut spice rack number {n} {i}", "k": 20, "rerank": False})
        found |= {hit["id"] for hit in reply.json()["items"]}
    assert set(acknowledged) <= found
    first = post(url, "/v1/recommend", {"text": "cordless drill", "k": 3}).json()["items"][0]  # the rule survived
    assert first["id"] == acknowledged[0] and first["why"]["rules"] == ["pinned at 1 by rule 'survivor'"]
    requests.delete(url + "/v1/admin/rules/survivor", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    logged = {(e["request_id"], e["product_id"]) for e in logged_events(cfg)}
    assert len(clicks) == 40 and set(clicks) <= logged  # every acknowledged click is on disk


def acknowledged_clicks(url: str, clients: int, each: int) -> list[tuple[str, str]]:
    """Clicks posted by ``clients`` threads on lists just recommended: the (request_id, product) of each
    one the server acknowledged."""
    done = []

    def client(n: int) -> None:
        for i in range(each):
            reply = post(url, "/v1/recommend", {"text": f"oak shelf bracket {n} {i}", "k": 3, "rerank": False}).json()
            click = {"type": "click", "request_id": reply["request_id"], "product_id": reply["items"][-1]["id"]}
            if post(url, "/v1/events", {"events": [click]}).status_code == 200:
                done.append((click["request_id"], click["product_id"]))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return done


def logged_events(cfg: ServeConfig) -> list[dict]:
    folder = Path(cfg.resolved_events_dir()) / "events"
    return [json.loads(line) for path in folder.glob("date=*/*.jsonl") for line in path.read_text().splitlines()
            if line.endswith("}")]


def change_log(cfg: ServeConfig, url: str):
    from serve.live_index import change_log_path

    version = requests.get(url + "/v1/stats", timeout=30).json()["version"]["id"]
    return change_log_path(cfg.resolved_state_dir(), version)


def test_a_torn_change_log_record_neither_breaks_writes_nor_reads(resilient):
    url, cfg = resilient
    assert post(url, "/v1/items", {"items": [{"id": "torn-1", "title": "Copper rain chain"}]},
                token=TOKEN).status_code == 200
    with open(change_log(cfg, url), "ab") as fh:  # a writer that died mid-record
        fh.write(b'{"op": "upsert", "id": "half", "title": "Cop')
    reply = post(url, "/v1/items", {"items": [{"id": "torn-2", "title": "Cedar planter box"}]}, token=TOKEN)
    assert reply.status_code == 200, reply.text
    for text, wanted in (("copper rain chain", "torn-1"), ("cedar planter box", "torn-2")):
        hits = post(url, "/v1/recommend", {"text": text, "k": 3, "rerank": False}).json()["items"]
        assert hits[0]["id"] == wanted
    for pid in replica_pids("Retriever"):  # restarted replicas replay the log, damaged or not
        os.kill(pid, 9)
    assert ready(url) and wait_for_replicas("Retriever", 2)
    hits = post(url, "/v1/recommend", {"text": "cedar planter box", "k": 3, "rerank": False}).json()["items"]
    assert hits[0]["id"] == "torn-2"


def test_a_full_disk_refuses_changes_with_507_and_keeps_serving(resilient):
    url, cfg = resilient
    log_file = change_log(cfg, url)
    size = log_file.stat().st_size
    pids = replica_pids("Retriever")
    for pid in pids:  # the log can grow by 50 bytes: less than any record
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (size + 50, resource.RLIM_INFINITY))
    try:
        reply = post(url, "/v1/items", {"items": [{"id": "no-room", "title": "Marble mortar and pestle"}]},
                     token=TOKEN)
        assert reply.status_code == 507, reply.text
        assert reply.json()["error"]["code"] == "insufficient_storage" and "nothing was changed" in reply.text
        assert log_file.stat().st_size == size
        hits = post(url, "/v1/recommend", {"text": "marble mortar and pestle", "k": 5, "rerank": False})
        assert hits.ok and "no-room" not in [h["id"] for h in hits.json()["items"]]
    finally:
        for pid in pids:
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    assert post(url, "/v1/items", {"items": [{"id": "room", "title": "Marble mortar and pestle"}]},
                token=TOKEN).status_code == 200


def test_a_full_disk_refuses_events_with_507_and_recommendations_go_on(resilient):
    url, cfg = resilient
    assert acknowledged_clicks(url, 1, 1)  # the gateway's event file exists
    (pid,) = replica_pids("Gateway")
    mine = [p for p in (Path(cfg.resolved_events_dir()) / "events").glob(f"date=*/*-{pid}-*.jsonl")]
    size = max(p.stat().st_size for p in mine)
    before = len(logged_events(cfg))
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (size + 50, resource.RLIM_INFINITY))  # less than any record
    try:
        reply = post(url, "/v1/recommend", {"text": "brass door knocker", "k": 3, "rerank": False})
        assert reply.status_code == 200, reply.text
        click = {"type": "click", "request_id": reply.json()["request_id"], "product_id": reply.json()["items"][0]["id"]}
        refused = post(url, "/v1/events", {"events": [click]})
        assert refused.status_code == 507, refused.text
        assert refused.json()["error"]["code"] == "insufficient_storage" and "nothing was written" in refused.text
        assert len(logged_events(cfg)) == before and max(p.stat().st_size for p in mine) == size
        assert post(url, "/v1/recommend", {"text": "brass door knocker", "k": 3}).status_code == 200
    finally:
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    assert post(url, "/v1/events", {"events": [click]}).status_code == 200
    stats = requests.get(url + "/v1/stats", timeout=30).json()["events"]
    assert stats["write_failures"] >= 1 and stats["events_refused"] >= 1


def test_an_index_that_vanishes_after_a_reload_never_bricks_the_service(resilient, artifacts):  # noqa: F811
    from ray import serve

    from serve.app import build_app

    url, cfg = resilient
    root, _ = artifacts
    original = requests.get(url + "/v1/stats", timeout=30).json()["version"]["id"]
    doomed = root / "index_doomed"
    shutil.copytree(root / "index", doomed, dirs_exist_ok=True)
    assert post(url, "/v1/admin/reload", {"index_dir": str(doomed)}, token=TOKEN).status_code == 200
    shutil.rmtree(doomed)
    for pid in replica_pids("Retriever"):  # replicas restarted now cannot load the active version
        os.kill(pid, 9)
    assert wait_for_replicas("Retriever", 2)

    def settled(get, wanted):  # until the replacements answer (a probe in between may time out instead)
        deadline = time.time() + 120
        while True:
            reply = get()
            if wanted(reply) or time.time() > deadline:
                return reply
            time.sleep(1)

    reply = settled(lambda: requests.get(url + "/readyz", timeout=60),
                    lambda r: r.status_code == 503 and "cannot be loaded" in r.json().get("reason", ""))
    assert reply.status_code == 503 and "cannot be loaded" in reply.json()["reason"], reply.text  # the truth
    assert str(root) not in reply.text
    reply = settled(lambda: post(url, "/v1/recommend", {"text": "drill", "k": 3}), lambda r: r.status_code == 503)
    assert reply.status_code == 503 and reply.json()["error"]["code"] == "index_unavailable", reply.text
    # an admin can always reload back, even though the vanished version's changes cannot be read
    back = post(url, "/v1/admin/reload", {"index_dir": str(root / "index")}, token=TOKEN)
    assert back.status_code == 200 and back.json()["carried_over"].startswith("none"), back.text
    assert ready(url, 60)
    # and a restart on the command line's index comes up even when the saved reload points nowhere
    shutil.copytree(root / "index", doomed)
    assert post(url, "/v1/admin/reload", {"index_dir": str(doomed)}, token=TOKEN).status_code == 200
    serve.delete("firstlight")
    shutil.rmtree(doomed)
    serve.run(build_app(cfg), name="firstlight", route_prefix="/")
    assert ready(url, 120)
    stats = requests.get(url + "/v1/stats", timeout=30).json()
    assert stats["version"]["id"] == original and "could not be served" in stats["dropped_at_start"]
    assert post(url, "/v1/recommend", {"text": "drill", "k": 3}).status_code == 200
