"""The event log: request ids, the group-commit writer and its limits, reading logs back with Ray Data,
and the events API over real HTTP (impressions logged by the server, clicks linked to them)."""

from __future__ import annotations

import errno
import json
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from data_pipeline.events import EVENTS, IMPRESSIONS, read_log, read_stream
from serve.canary import CanaryStore, in_canary
from serve.event_log import (
    AppendLog,
    EventLogging,
    LogFull,
    RequestIds,
    ShownLists,
    choose_swap,
)
from serve.versions import Version
from tests.serving import TOKEN, artifacts, post, served, small_app  # noqa: F401 - the shared fixture


def lines(folder: Path, stream: str) -> list[dict]:
    return [json.loads(line) for path in sorted((folder / stream).glob("date=*/*.jsonl"))
            for line in path.read_text().splitlines()]


# -- request ids -------------------------------------------------------------------------------------
def test_request_ids_carry_time_and_arm_and_only_this_servers_are_known(tmp_path):
    ids = RequestIds(tmp_path)
    issued = ids.issue(1_765_000_000.25, "canary")
    assert ids.read(issued) == (1_765_000_000.25, "canary")
    assert RequestIds(tmp_path).read(issued) is not None  # a second replica shares the secret
    assert RequestIds(tmp_path / "other").read(issued) is None  # another server's secret
    head, body, signature = issued.split(".")
    flipped = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
    for bad in (head + "." + flipped + "." + signature, "r1.x.y", "", "r1..", "a" * 1000, "r2." + body + "." +
                signature, issued + "="):
        assert ids.read(bad) is None, bad
    assert len({ids.issue() for _ in range(1000)}) == 1000
    assert (tmp_path / ".request_id_secret").stat().st_mode & 0o777 == 0o600


def test_swaps_reach_every_lower_position_for_the_asked_share():
    rng = np.random.default_rng(0)
    swaps = [choose_swap(rng, 10, 0.1, 10) for _ in range(20000)]
    done = [s for s in swaps if s]
    assert 0.09 < len(done) / len(swaps) < 0.11
    assert {s[0] for s in done} == {1} and {s[1] for s in done} == set(range(2, 11))
    assert choose_swap(rng, 1, 1.0, 10) is None and choose_swap(rng, 30, 0.0, 10) is None
    assert {choose_swap(rng, 3, 1.0, 10)[1] for _ in range(100)} == {2, 3}


def test_shown_lists_forget_the_oldest():
    shown = ShownLists(size=2)
    for n in range(3):
        shown.add(f"r{n}", [f"p{n}"], "control")
    assert shown.get("r0") is None and shown.get("r2") == (("p2",), "control")


# -- the writer ------------------------------------------------------------------------------------
def test_events_are_on_disk_when_acknowledged_and_impressions_are_grouped(tmp_path):
    log = AppendLog(tmp_path, EventLogging(flush_ms=5))
    for n in range(50):
        assert log.offer(IMPRESSIONS, {"request_id": f"r{n}", "items": ["a", "b"]})
    done = log.append(EVENTS, [{"request_id": "r1", "type": "click", "product_id": "a"}] * 3)
    assert done.result(timeout=10) is True
    assert len(lines(tmp_path, EVENTS)) == 3  # on disk before the future resolved
    log.close()
    written = lines(tmp_path, IMPRESSIONS)
    assert [r["request_id"] for r in written] == [f"r{n}" for n in range(50)]
    assert log.counts["impressions_logged"] == 50 and log.counts["events_logged"] == 3
    assert all(p.parent.name.startswith("date=") for p in tmp_path.glob("*/*/*.jsonl"))


def test_a_full_queue_drops_impressions_and_refuses_events(tmp_path):
    log = AppendLog(tmp_path, EventLogging(max_queue=2))
    log.queue.put(None)  # the writer thread stops: nothing drains the queue any more
    log._thread.join(5)
    assert log.offer(IMPRESSIONS, {"request_id": "a"}) and log.offer(IMPRESSIONS, {"request_id": "b"})
    assert not log.offer(IMPRESSIONS, {"request_id": "c"})
    with pytest.raises(LogFull, match="behind"):
        log.append(EVENTS, [{"request_id": "a"}]).result(timeout=5)
    assert log.counts["impressions_dropped"] == 1 and log.counts["events_refused"] == 1


def test_a_failed_write_refuses_its_events_and_leaves_no_partial_record(tmp_path, monkeypatch):
    log = AppendLog(tmp_path, EventLogging(flush_ms=1))
    assert log.append(EVENTS, [{"request_id": "kept"}]).result(timeout=10)
    real_write = log._file(EVENTS).write

    class Full:
        def __getattr__(self, name):
            return getattr(held, name)

        def write(self, data):  # half a record lands, then the disk is full
            real_write(bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")

    held = log._file(EVENTS)
    monkeypatch.setitem(log._files, EVENTS, (log._files[EVENTS][0], log._files[EVENTS][1], Full()))
    with pytest.raises(LogFull, match="No space left"):
        log.append(EVENTS, [{"request_id": "lost", "type": "click"}]).result(timeout=10)
    monkeypatch.setitem(log._files, EVENTS, (log._files[EVENTS][0], log._files[EVENTS][1], held))
    assert log.append(EVENTS, [{"request_id": "after"}]).result(timeout=10)
    log.close()
    assert [r["request_id"] for r in lines(tmp_path, EVENTS)] == ["kept", "after"]
    assert log.counts["events_refused"] == 1 and log.counts["write_failures"] == 1


def test_logs_are_read_back_with_ray_data_skipping_a_torn_line(tmp_path, ray_session):
    log = AppendLog(tmp_path, EventLogging(flush_ms=1), writer="w1")
    log.offer(IMPRESSIONS, {"request_id": "r1", "ts": 1.0, "items": ["a", "b", "c"], "swap": [1, 3], "arm": "control"})
    log.offer(IMPRESSIONS, {"request_id": "r2", "ts": 2.0, "items": ["d"], "swap": None})
    log.append(EVENTS, [{"request_id": "r1", "type": "click", "product_id": "c", "position": 3},
                        {"request_id": "r9", "type": "click", "product_id": "x"}]).result(timeout=10)
    log.close()
    torn = next((tmp_path / EVENTS).glob("date=*/*.jsonl"))
    with open(torn, "ab") as fh:  # a writer killed mid-append
        fh.write(b'{"request_id": "r2", "type": "cli')
    impressions, events = read_log(tmp_path)
    assert sorted(impressions["request_id"]) == ["r1", "r2"]
    assert impressions.set_index("request_id").loc["r1", "items"] == ["a", "b", "c"]
    assert impressions.set_index("request_id").loc["r1", "swap"] == [1, 3]
    assert events[["request_id", "product_id", "position"]].values.tolist() == [["r1", "c", 3]]  # r9: no impression
    assert len(read_stream(tmp_path / "nothing", EVENTS)) == 0


def _bucket_files(uploader) -> dict[str, bytes]:
    import pyarrow.fs as pafs

    infos = uploader.fs.get_file_info(pafs.FileSelector(uploader.root, recursive=True, allow_not_found=True))
    out = {}
    for info in infos:
        if info.type == pafs.FileType.File:
            with uploader.fs.open_input_stream(info.path) as fh:
                out[info.path[len(uploader.root) + 1:]] = fh.read()
    return out


def test_the_log_is_copied_to_a_bucket_as_its_files_close(tmp_path):
    """pyarrow's in-memory file system stands in for the bucket (tests/test_storage.py: a real S3 API)."""
    log = AppendLog(tmp_path, EventLogging(flush_ms=1, upload_to="mock:///bucket/events", upload_every_s=0.3))
    log.offer(IMPRESSIONS, {"request_id": "r1", "items": ["a"]})
    assert log.append(EVENTS, [{"request_id": "r1", "type": "click", "product_id": "a"}]).result(timeout=10)
    deadline = time.monotonic() + 10
    while len(_bucket_files(log.uploader)) < 2 and time.monotonic() < deadline:  # quiet files are copied
        time.sleep(0.1)
    first = _bucket_files(log.uploader)
    assert sorted(k.split("/")[0] for k in first) == [EVENTS, IMPRESSIONS]
    time.sleep(0.4)  # a writer starts a new file every upload_every_s: a later event goes to a new one
    assert log.append(EVENTS, [{"request_id": "r1", "type": "purchase", "product_id": "a"}]).result(timeout=10)
    log.close()  # the last pass copies what this writer held open
    local = {p.relative_to(tmp_path).as_posix(): p.read_bytes() for p in tmp_path.glob("*/date=*/*.jsonl")}
    assert _bucket_files(log.uploader) == local and len(local) == 3
    assert log.stats()["files_uploaded"] == 3 and log.stats()["unuploaded_bytes"] == 0
    assert not log.uploader.upload_once(final=True)  # nothing changed: nothing copied again


def test_a_bucket_that_falls_behind_refuses_events_until_it_catches_up(tmp_path, monkeypatch):
    log = AppendLog(tmp_path, EventLogging(flush_ms=1, upload_to="mock:///bucket/events", upload_every_s=3600,
                                           max_unuploaded_mb=100 / 2**20))  # 100 bytes
    bucket = log.uploader.fs

    def unreachable(path):
        raise OSError("When uploading part: AWS Error NETWORK_CONNECTION")

    monkeypatch.setattr(log.uploader, "fs", type("Down", (), {"create_dir": lambda *a, **k: None,
                                                               "open_output_stream": staticmethod(unreachable)})())
    for n in range(3):
        assert log.append(EVENTS, [{"request_id": f"r{n}", "type": "click", "product_id": "a" * 40}]).result(timeout=10)
    assert log.uploader.upload_once(final=True) == 0 and log.uploader.behind_bytes > 100
    with pytest.raises(LogFull, match="max_unuploaded_mb"):
        log.append(EVENTS, [{"request_id": "r9", "type": "click", "product_id": "a"}]).result(timeout=5)
    assert not log.offer(IMPRESSIONS, {"request_id": "r9"})
    assert log.stats()["upload_failures"] == 1 and log.stats()["events_refused"] == 1
    monkeypatch.setattr(log.uploader, "fs", bucket)  # the bucket is back
    assert log.uploader.upload_once(final=True) == 1 and log.uploader.behind_bytes == 0
    assert log.append(EVENTS, [{"request_id": "r9", "type": "click", "product_id": "a"}]).result(timeout=10)
    log.close()


def test_reading_a_folder_without_a_log_names_the_fix(tmp_path):
    from common.errors import ConfigError

    with pytest.raises(ConfigError, match="events.*no event log"):
        read_log(tmp_path)


def test_the_serving_config_refuses_a_bucket_log_and_bad_shares(artifacts):  # noqa: F811
    from common.errors import ConfigError

    root, _ = artifacts
    for settings, field in (({"events": {"dir": "s3://bucket/events"}}, "events.dir"),
                            ({"events": {"upload_to": str(root / "copy")}}, "events.upload_to"),
                            ({"events": {"upload_to": "nosuch://bucket/events"}}, "events.upload_to"),
                            ({"events": {"swap_share": 1.5}}, "events.swap_share"),
                            ({"limits": {"max_events": 0}}, "limits.max_events")):
        with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
            small_app({"index_dir": str(root / "index"), **settings}).validate()


def test_canary_assignment_is_sticky_and_near_its_share():
    arms = [in_canary(f"visit-{n}", "c1", 0.2) for n in range(20000)]
    assert 0.19 < sum(arms) / len(arms) < 0.21
    assert arms == [in_canary(f"visit-{n}", "c1", 0.2) for n in range(20000)]  # the same on every replica
    assert arms != [in_canary(f"visit-{n}", "c2", 0.2) for n in range(20000)]  # a new canary, a new draw


def test_a_canary_survives_a_restart_and_ends_durably(tmp_path):
    store = CanaryStore(str(tmp_path))
    assert store.get() is None
    store.start(Version("m", "/idx/b", "/rerankers/b"), 0.25)
    again = CanaryStore(str(tmp_path)).get()  # a restarted replica
    assert again["version"] == Version("m", "/idx/b", "/rerankers/b") and again["share"] == 0.25
    assert again["id"] == Version("m", "/idx/b", "/rerankers/b").id != Version("m", "/idx/b").id
    store.clear()
    assert CanaryStore(str(tmp_path)).get() is None
    (tmp_path / "canary.json").write_text("{not json")
    assert CanaryStore(str(tmp_path)).get() is None  # a damaged file serves no canary, and no error


# -- over HTTP -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def logged(artifacts):  # noqa: F811
    root, _ = artifacts
    cfg = small_app({"index_dir": str(root / "index"), "state_dir": str(root / "events_state"),
                     "admin_token_file": str(root / "token"),
                     "events": {"swap_share": 0.5, "flush_ms": 5}, "limits": {"max_events": 5}})
    with served(cfg) as url:
        yield url, Path(cfg.resolved_events_dir())


def wait_for_lines(folder: Path, stream: str, request_ids: list[str], timeout_s: float = 10) -> dict[str, dict]:
    """The logged records of ``request_ids`` (impressions are written within flush_ms, not awaited)."""
    deadline = time.time() + timeout_s
    while True:
        found = {r["request_id"]: r for r in lines(folder, stream)}
        if set(request_ids) <= set(found) or time.time() > deadline:
            return found
        time.sleep(0.1)


@pytest.mark.serving
def test_a_click_is_linked_to_the_list_the_server_logged(logged):
    url, folder = logged
    reply = post(url, "/v1/recommend", {"text": "cordless drill", "k": 8, "session": {"id": "visit-7"}}).json()
    shown = [item["id"] for item in reply["items"]]
    request_id = reply["request_id"]
    accepted = post(url, "/v1/events", {"events": [{"type": "click", "request_id": request_id, "product_id": shown[2]},
                                                   {"type": "purchase", "request_id": request_id,
                                                    "product_id": shown[2]}]})
    assert accepted.status_code == 200 and accepted.json() == {"accepted": 2}, accepted.text
    impression = wait_for_lines(folder, IMPRESSIONS, [request_id])[request_id]
    assert impression["items"] == shown and impression["text"] == "cordless drill"
    assert impression["session_id"] == "visit-7" and impression["arm"] == "control"
    assert impression["version"] == reply["version"]["id"]
    events = [e for e in lines(folder, EVENTS) if e["request_id"] == request_id]  # on disk once acknowledged
    assert [(e["type"], e["product_id"], e["position"]) for e in events] == [("click", shown[2], 3),
                                                                             ("purchase", shown[2], 3)]
    batch = post(url, "/v1/recommend/batch", {"texts": ["drill", "hammer"], "k": 3}).json()
    assert len(set(batch["request_ids"])) == 2
    arms = requests.get(url + "/v1/stats", timeout=30).json()["arms"]["control"]
    assert arms["clicks"] >= 1 and arms["purchases"] >= 1 and arms["impressions"] >= 3 and arms["ctr"] > 0


@pytest.mark.serving
def test_swapped_lists_are_logged_as_shown(logged):
    url, folder = logged
    texts = ("wood screws", "garden hose", "ceiling fan", "paint roller", "door hinge", "shop vac", "lawn mower",
             "light bulb") * 3
    ids = [post(url, "/v1/recommend", {"text": text, "k": 6, "rerank": False}).json()["request_id"] for text in texts]
    logged_now = wait_for_lines(folder, IMPRESSIONS, ids)
    swaps = [logged_now[i]["swap"] for i in ids if i in logged_now]
    # a half share: 24 lists all unswapped is a 1-in-16-million event (8 lists, 1 in 256, did happen)
    assert len(swaps) == 24 and any(swaps) and not all(swaps)
    assert all(s is None or (s[0] == 1 and 2 <= s[1] <= 6) for s in swaps)


@pytest.mark.serving
@pytest.mark.parametrize("event, field, code", [
    ({"type": "click", "request_id": "r1.made.up", "product_id": "x"}, "events.0.request_id", "unknown_request"),
    ({"type": "view", "request_id": "FRESH", "product_id": "SHOWN"}, "events.0.type", "invalid_value"),
    ({"type": "click", "request_id": "FRESH", "product_id": "not-shown-here"}, "events.0.product_id", "not_shown"),
    ({"type": "click", "request_id": "FRESH", "product_id": 12}, "events.0.product_id", "wrong_type"),
    ({"type": "click", "request_id": "FRESH"}, "events.0.product_id", "missing_field"),
    ({"type": "click", "request_id": "FRESH", "product_id": "SHOWN", "user": "ann@example.com"}, "events.0.user",
     "unknown_field"),
])
def test_bad_events_get_a_documented_422_and_nothing_is_logged(logged, event, field, code):
    url, folder = logged
    reply = post(url, "/v1/recommend", {"text": "step ladder", "k": 3}).json()
    event = {key: reply["request_id"] if value == "FRESH" else reply["items"][0]["id"] if value == "SHOWN" else value
             for key, value in event.items()}
    before = len(lines(folder, EVENTS))
    answer = post(url, "/v1/events", {"events": [event]})
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["field"] == field and answer.json()["error"]["code"] == code, answer.text
    assert len(lines(folder, EVENTS)) == before


@pytest.mark.serving
def test_event_counts_are_limited(logged):
    url, _ = logged
    reply = post(url, "/v1/recommend", {"text": "tape measure", "k": 2}).json()
    one = {"type": "click", "request_id": reply["request_id"], "product_id": reply["items"][0]["id"]}
    for events in ([], [one] * 6):
        answer = post(url, "/v1/events", {"events": events})
        assert answer.status_code == 422 and answer.json()["error"]["field"] == "events", answer.text
    assert post(url, "/v1/events", {"events": [one] * 5}).json() == {"accepted": 5}


@pytest.mark.serving
def test_a_canary_serves_its_share_of_sessions_stickily_and_is_promoted_or_rolled_back(logged, artifacts):  # noqa: F811
    url, _ = logged
    root, _ = artifacts
    admin = {"Authorization": f"Bearer {TOKEN}"}
    control = requests.get(url + "/v1/stats", timeout=30).json()["version"]["id"]
    assert post(url, "/v1/admin/canary", {"index_dir": str(root / "index_v2"), "share": 0.5}).status_code == 401
    started = post(url, "/v1/admin/canary", {"index_dir": str(root / "index_v2"), "share": 0.5}, token=TOKEN)
    assert started.status_code == 200 and started.json()["outcome"] == "started", started.text
    canary = started.json()["canary"]["version"]["id"]
    again = post(url, "/v1/admin/canary", {"index_dir": str(root / "index_v2"), "share": 0.5}, token=TOKEN)
    assert again.status_code == 409 and again.json()["error"]["code"] == "canary_running"
    for share in (0.0, 0.9):
        bad = post(url, "/v1/admin/canary", {"index_dir": str(root / "index_v2"), "share": share}, token=TOKEN)
        assert bad.status_code in (409, 422)
    served_by = {}
    for n in range(16):
        for _ in range(3):
            reply = post(url, "/v1/recommend", {"text": "cordless drill", "k": 3, "rerank": False,
                                                "session": {"id": f"visit-{n}"}}).json()
            served_by.setdefault(n, set()).add(reply["version"]["id"])
        if reply["version"]["id"] == canary:  # a click on a canary list counts for the canary
            click = {"type": "click", "request_id": reply["request_id"], "product_id": reply["items"][0]["id"]}
            assert post(url, "/v1/events", {"events": [click]}).status_code == 200
    assert all(len(ids) == 1 for ids in served_by.values())  # sticky
    assert {next(iter(ids)) for ids in served_by.values()} == {control, canary}  # both arms serve
    added = post(url, "/v1/items", {"items": [{"id": "canary-new", "title": "Teak shower bench"}]}, token=TOKEN)
    assert added.status_code == 200
    for n in range(16):  # a product added during the canary is found in both arms at once
        hits = post(url, "/v1/recommend", {"text": "teak shower bench", "k": 3, "rerank": False,
                                           "session": {"id": f"visit-{n}"}}).json()["items"]
        assert "canary-new" in [h["id"] for h in hits]  # (first but for this app's swaps)
    state = requests.get(url + "/v1/admin/canary", headers=admin, timeout=30).json()
    assert state["canary"]["share"] == 0.5 and state["arms"]["canary"]["clicks"] >= 1
    assert state["arms"]["canary"]["requests"] >= 3 and state["arms"]["control"]["requests"] >= 3
    promoted = post(url, "/v1/admin/canary/promote", token=TOKEN).json()
    assert promoted["outcome"] == "promoted" and promoted["canary"] is None
    assert requests.get(url + "/v1/stats", timeout=30).json()["version"]["id"] == canary
    assert post(url, "/v1/admin/canary/rollback", token=TOKEN).status_code == 404
    # and back: the old control as a canary, rolled back
    assert post(url, "/v1/admin/canary", {"index_dir": str(root / "index"), "share": 0.5}, token=TOKEN).ok
    assert post(url, "/v1/admin/canary/rollback", token=TOKEN).json()["outcome"] == "rolled back"
    for n in range(8):
        reply = post(url, "/v1/recommend", {"text": "drill", "k": 2, "session": {"id": f"visit-{n}"}}).json()
        assert reply["version"]["id"] == canary
