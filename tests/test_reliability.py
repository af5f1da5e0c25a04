"""What production throws at the service, below HTTP: hostile bodies, torn and damaged change logs,
a full disk mid-append, saved state pointing at a vanished index. (Over HTTP: test_serve.py and
test_faults.py.)"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from serve.api import (
    MAX_DEPTH,
    ApiError,
    ItemsRequest,
    RecommendRequest,
    check_id,
    parse_body,
    read_body,
)

DIM = 8


def refusal(raw: bytes, model=RecommendRequest) -> tuple[int, str, str]:
    with pytest.raises(ApiError) as caught:
        parse_body(raw, "application/json", model)
    return caught.value.status, caught.value.code, caught.value.field


HOSTILE = [
    ("JSON nested 50,000 deep", b"[" * 50000 + b"]" * 50000, RecommendRequest, (400, "too_deep", "body")),
    ("an object nested 50,000 deep", b'{"a":' * 50000 + b"1" + b"}" * 50000, RecommendRequest,
     (400, "too_deep", "body")),
    ("a field nested past the limit", b'{"text": "a", "exclude": ' + b"[" * 30 + b"]" * 30 + b"}", RecommendRequest,
     (400, "too_deep", "exclude" + ".0" * MAX_DEPTH)),
    ("an integer of 5,000 digits", b'{"text": "a", "k": ' + b"9" * 5000 + b"}", RecommendRequest,
     (400, "invalid_json", "body")),
    ("an integer of 4,000 digits", b'{"text": "a", "k": ' + b"9" * 4000 + b"}", RecommendRequest,
     (422, "out_of_range", "k")),
    ("a lone surrogate in text", b'{"text": "drill \\ud800"}', RecommendRequest, (422, "invalid_characters", "text")),
    ("a lone surrogate in an exclude id", b'{"text": "a", "exclude": ["\\udfff"]}', RecommendRequest,
     (422, "invalid_characters", "exclude.0")),
    ("a lone surrogate in an item id", b'{"items": [{"id": "x\\udc00", "title": "t"}]}', ItemsRequest,
     (422, "invalid_characters", "items.0.id")),
    ("a lone surrogate in an item title", b'{"items": [{"id": "x", "title": "\\ud800"}]}', ItemsRequest,
     (422, "invalid_characters", "items.0.title")),
    ("a lone surrogate in a key", b'{"\\ud800": 1}', RecommendRequest, (422, "invalid_characters", "body")),
]


@pytest.mark.parametrize("name,raw,model,expected", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_bodies_get_a_4xx_naming_the_field(name, raw, model, expected):
    assert refusal(raw, model) == expected


def test_a_surrogate_pair_is_a_whole_character_and_accepted():
    assert parse_body(b'{"text": "lamp \\ud83d\\udca1"}', "application/json", RecommendRequest).text == "lamp \U0001f4a1"


@pytest.mark.parametrize("product_id,ok", [("sku/42", True), ("a b", True), ("üñí", True), ("100%", True),
                                           (" lead", False), ("trail ", False), ("tab\there", False), ("", False),
                                           ("x" * 201, False), ("nl\n", False)])
def test_product_ids_are_constrained_as_documented(product_id, ok):
    if ok:
        assert check_id(product_id, "items.0.id") == product_id
    else:
        with pytest.raises(ApiError, match="ids are 1 to 200 characters"):
            check_id(product_id, "items.0.id")


class FakeRequest:
    """What read_body uses of a Starlette request: headers and the body stream (counting what was read)."""

    def __init__(self, headers: list[tuple[str, str]], chunks: int, chunk_bytes: int = 1 << 20):
        from starlette.datastructures import Headers

        self.headers = Headers(raw=[(k.encode(), v.encode()) for k, v in headers])
        self.total, self.chunk_bytes, self.read = chunks, chunk_bytes, 0

    async def stream(self):
        for _ in range(self.total):
            self.read += 1
            yield b"x" * self.chunk_bytes


def test_a_huge_body_is_refused_by_content_length_before_a_byte_is_read():
    request = FakeRequest([("content-length", str(200 << 20))], chunks=200)
    with pytest.raises(ApiError) as caught:
        asyncio.run(read_body(request, 65536))
    assert (caught.value.status, caught.value.code, request.read) == (413, "body_too_large", 0)
    for bad in ("12abc", "-1"):
        with pytest.raises(ApiError, match="not a byte count"):
            asyncio.run(read_body(FakeRequest([("content-length", bad)], chunks=1), 65536))
    with pytest.raises(ApiError, match="413|at most") as caught:
        asyncio.run(read_body(FakeRequest([("content-length", "9" * 30)], chunks=1), 65536))
    assert caught.value.status == 413


def test_a_chunked_body_stops_being_read_at_the_cap():
    request = FakeRequest([("transfer-encoding", "chunked")], chunks=200)  # 200 MB on offer
    with pytest.raises(ApiError) as caught:
        asyncio.run(read_body(request, 3 << 20))
    assert caught.value.status == 413 and request.read == 4  # stopped at the first chunk past 3 MB
    assert asyncio.run(read_body(FakeRequest([], chunks=2, chunk_bytes=10), 100)) == b"x" * 20


# -- the change log ------------------------------------------------------------------------------
@pytest.fixture()
def small_index(tmp_path):
    """A 20-product catalogue and its flat index, as `prepare` and `index` write them."""
    from data_pipeline.index import ProductIndex

    ids = [f"p{i}" for i in range(20)]
    (tmp_path / "data" / "catalogue").mkdir(parents=True)
    pd.DataFrame({"product_id": ids, "title": [f"product {i}" for i in range(20)],
                  "text": [f"product {i} text" for i in range(20)]}).to_parquet(tmp_path / "data" / "catalogue" / "part.parquet")
    vectors = np.random.default_rng(0).standard_normal((20, DIM)).astype("float32")
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ProductIndex.build(ids, vectors, model="m").save(tmp_path / "index")
    return tmp_path


def live(root: Path, log_name: str = "changes.jsonl"):
    from serve.live_index import LiveIndex

    return LiveIndex(str(root / "index"), str(root / "data"), root / "state" / log_name, use_gpu="no")


def item(pid: str) -> dict:
    vector = np.ones(DIM, dtype=np.float32) / np.sqrt(DIM)
    return {"id": pid, "title": f"new {pid}", "text": f"new {pid} text", "vector": vector}


def test_a_torn_last_record_is_cut_before_the_next_append_and_never_joined(small_index, caplog):
    index = live(small_index)
    index.upsert([item("a1")])
    log_file = small_index / "state" / "changes.jsonl"
    with open(log_file, "ab") as fh:  # a writer died mid-append: never fsync'ed, never acknowledged
        fh.write(b'{"op": "upsert", "id": "torn", "vec')
    restarted = live(small_index)  # the torn tail waits: it is not a whole line
    assert restarted.contains("a1") and not restarted.contains("torn")
    with caplog.at_level(logging.WARNING, logger="ray.serve"):
        restarted.upsert([item("a2")])
    assert "torn record" in caplog.text and str(log_file) in caplog.text
    lines = log_file.read_bytes().split(b"\n")
    assert lines[-1] == b"" and [json.loads(line)["id"] for line in lines[:-1]] == ["a1", "a2"]
    again = live(small_index)
    assert again.contains("a1") and again.contains("a2") and len(again) == 22


def test_a_damaged_line_in_the_log_is_skipped_with_its_file_and_line_named(small_index, caplog):
    index = live(small_index)
    index.upsert([item("b1")])
    log_file = small_index / "state" / "changes.jsonl"
    with open(log_file, "ab") as fh:  # what a record joined onto a torn one looked like, and bad records
        fh.write(b'{"op": "upsert", "id": "to{"op": "upsert", "id": "x"}\n')
        fh.write(b'{"op": "upsert", "id": "short", "vector": [1.0]}\n')
        fh.write(b'{"op": "explode", "id": "b1"}\n[1, 2]\n')
    index.upsert([item("b2")])
    with caplog.at_level(logging.WARNING, logger="ray.serve"):
        restarted = live(small_index)
    assert restarted.contains("b1") and restarted.contains("b2") and not restarted.contains("short")
    for line in (2, 3, 4, 5):
        assert f"{log_file} line {line}" in caplog.text
    assert restarted.search(np.ones((1, DIM), "float32"), ["new b2"], 3, _stage())[0]


def _stage():
    from ranking.hybrid import FirstStage

    return FirstStage()


FULL_DISK = """
import json, resource, sys
from pathlib import Path
sys.path.insert(0, {repo!r})
import numpy as np
from tests.test_reliability import item, live
from serve.live_index import StorageFull
root = Path({root!r})
index = live(root)
index.upsert([item("before")])
log_file = root / "state" / "changes.jsonl"
size = log_file.stat().st_size
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 100, resource.RLIM_INFINITY))  # room for part of a record
try:
    index.upsert([item("after")])
    outcome = "written"
except StorageFull as err:
    outcome = str(err)
print(json.dumps({{"outcome": outcome, "size_before": size, "size_after": log_file.stat().st_size,
                  "contains_after": index.contains("after")}}))
"""


def test_a_full_disk_mid_append_refuses_and_leaves_no_partial_record(small_index):
    script = FULL_DISK.format(repo=str(Path(__file__).parents[1]), root=str(small_index))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert "could not be written" in result["outcome"] and "nothing was changed" in result["outcome"]
    assert result["size_after"] == result["size_before"] and not result["contains_after"]
    restarted = live(small_index)  # what was acknowledged is there, what was refused is not
    assert restarted.contains("before") and not restarted.contains("after")
    restarted.upsert([item("after")])
    assert live(small_index).contains("after")


# -- saved state -----------------------------------------------------------------------------------
def test_a_saved_reload_to_a_vanished_index_is_dropped_at_start(tmp_path, caplog):
    from serve.versions import ActiveVersion, Version

    configured, reloaded = Version("m", str(tmp_path / "a")), Version("m", str(tmp_path / "b"))
    ActiveVersion(str(tmp_path / "state"), configured).set(reloaded)
    usable = lambda v: None if Path(v.index_dir).exists() else "its folder is gone"  # noqa: E731
    (tmp_path / "b").mkdir()
    assert ActiveVersion(str(tmp_path / "state"), configured, usable).get() == reloaded  # still there: kept
    (tmp_path / "b").rmdir()
    with caplog.at_level(logging.WARNING, logger="ray.serve"):
        restarted = ActiveVersion(str(tmp_path / "state"), configured, usable)
    assert restarted.get() == configured and reloaded.id in restarted.dropped
    assert "its folder is gone" in caplog.text
    (tmp_path / "state" / "active.json").write_text('{"model": "m", "index_')  # a damaged state file
    assert ActiveVersion(str(tmp_path / "state"), configured, usable).get() == configured


def test_public_version_shows_no_server_paths():
    from serve.versions import Version

    version = Version("/srv/models/shop/train/model", "/srv/data/shop/index")
    assert version.public() == {"id": version.id, "model": "train/model", "index": "shop/index"}
    assert Version("all-MiniLM-L6-v2", "/x/index").public()["model"] == "all-MiniLM-L6-v2"


def test_openapi_document_carries_limits_errors_and_the_admin_scheme():
    from serve.config import ServeConfig
    from serve.gateway import app
    from serve.openapi import openapi_document

    doc = openapi_document(
        app, ServeConfig.from_args({"limits.max_text_chars": 300, "limits.max_k": 50, "limits.max_batch_texts": 4})
    )
    recommend = doc["paths"]["/v1/recommend"]["post"]
    props = recommend["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert props["text"]["maxLength"] == 300 and props["k"]["maximum"] == 50
    assert {"400", "413", "415", "422"} <= set(recommend["responses"])
    assert recommend["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    assert "security" not in recommend
    items = doc["paths"]["/v1/items"]["post"]
    assert items["security"] == [{"adminToken": []}] and {"401", "503", "507"} <= set(items["responses"])
    assert doc["components"]["securitySchemes"]["adminToken"]["scheme"] == "bearer"
    delete = doc["paths"]["/v1/items/{product_id}"]["delete"]
    assert {"401", "404"} <= set(delete["responses"]) and "422" not in delete["responses"]
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    assert "503" in doc["paths"]["/readyz"]["get"]["responses"]
