"""A cloud storage root: every stage reads and writes s3:// URIs (a local S3 server, moto, stands in
for the cloud; the code path is pyarrow's S3 filesystem, as in production)."""

from __future__ import annotations

import json
import socket

import pytest

from common import storage
from model.runtime import EncoderRuntime
from tests.serving import artifacts  # noqa: F401 - the shared fixture

pytestmark = pytest.mark.training  # a slow kind: the quick tier (-m 'not slow') leaves these out

BUCKET = "firstlight-test"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A local S3 endpoint with one bucket; the environment points pyarrow and boto3 at it."""
    import boto3
    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           storage.MIRROR_ENV: str(tmp_path_factory.mktemp("mirror"))}
    patch = pytest.MonkeyPatch()
    for key, value in env.items():
        patch.setenv(key, value)
    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"])
    client.create_bucket(Bucket=BUCKET)
    # Ray Data reads the bucket from worker processes: like every node of a cluster, they need the
    # credentials in their environment, which a Ray started before this fixture lacks.
    import ray

    from common.runtime import ensure_ray

    if ray.is_initialized():
        ray.shutdown()
    ensure_ray(num_cpus=2)
    yield client
    patch.undo()
    server.stop()


def _keys(client, prefix: str) -> list[str]:
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    # pyarrow marks directories with empty "folder/" objects: not files
    return sorted(o["Key"][len(prefix):] for o in listed.get("Contents", []) if not o["Key"].endswith("/"))


def test_uri_detection_and_join():
    assert storage.is_uri("s3://bucket/x") and storage.is_uri("gs://bucket/x")
    assert not storage.is_uri("/tmp/x") and not storage.is_uri("file:///tmp/x") and not storage.is_uri("local:///x")
    assert not storage.is_uri("C:/data")  # a Windows drive letter is not a scheme
    assert storage.join("s3://b/root/", "data", "x") == "s3://b/root/data/x"
    assert storage.join("/tmp/root", "data") == "/tmp/root/data"


def test_push_uploads_the_manifest_last_and_pull_skips_a_current_mirror(s3, tmp_path):
    folder = tmp_path / "artifact"
    (folder / "part").mkdir(parents=True)
    (folder / "part" / "a.bin").write_bytes(b"x" * 10)
    (folder / "manifest.json").write_text(json.dumps({"stage": "test", "n": 1}))
    uri = f"s3://{BUCKET}/root/artifact"
    storage.push(folder, uri)
    assert _keys(s3, "root/artifact/") == ["manifest.json", "part/a.bin"]

    local = storage.pull(uri)
    assert (local / "part" / "a.bin").read_bytes() == b"x" * 10
    (local / "part" / "a.bin").write_bytes(b"changed locally")  # a current mirror is not fetched again
    assert storage.pull(uri) == local and (local / "part" / "a.bin").read_bytes() == b"changed locally"

    (folder / "manifest.json").write_text(json.dumps({"stage": "test", "n": 2}))  # a new version is
    storage.push(folder, uri)
    assert json.loads((storage.pull(uri) / "manifest.json").read_text())["n"] == 2
    assert (storage.pull(uri) / "part" / "a.bin").read_bytes() == b"x" * 10


def test_a_folder_without_its_manifest_counts_as_missing(s3):
    # what a crash during an upload leaves: files, but not the manifest written last
    s3.put_object(Bucket=BUCKET, Key="root/half/part/a.bin", Body=b"x")
    from common.errors import FirstLightError

    with pytest.raises(FirstLightError, match="no complete folder"):
        storage.pull(f"s3://{BUCKET}/root/half")
    assert not storage.pull(f"s3://{BUCKET}/root/half", required=False).exists()


def test_an_unreachable_storage_root_is_a_clear_error():
    from common.errors import FirstLightError

    with pytest.raises(FirstLightError, match="cannot open storage nosuch://"):
        storage.filesystem("nosuch://bucket/x")


def test_every_stage_reads_and_writes_an_s3_storage_root(s3, small_homedepot, tiny_model_dir,
                                                          tmp_path):
    from data_pipeline.embed import EmbedConfig, run_embed
    from data_pipeline.index import IndexConfig, ProductIndex, run_index
    from data_pipeline.prepare import PrepareConfig, run_prepare
    from evaluation.evaluate import EvalConfig, run_evaluate
    from model.folders import resolve_model_path

    root = f"s3://{BUCKET}/shop"
    prepared = run_prepare(PrepareConfig(dataset="homedepot", data_dir=str(small_homedepot),
                                         output_dir=f"{root}/data"))
    assert prepared == f"{root}/data"
    data_keys = _keys(s3, "shop/data/")
    assert "manifest.json" in data_keys
    assert any(k.startswith("catalogue/") for k in data_keys) and any(k.startswith("judgments/test/")
                                                                      for k in data_keys)

    # a model folder in the bucket, as a cluster whose nodes share no disk would keep it
    import shutil

    model_uri = f"{root}/models/tiny"
    shutil.copytree(tiny_model_dir, tmp_path / "tiny")
    storage.push(tmp_path / "tiny", model_uri, marker="config.json")
    assert resolve_model_path(model_uri) == str(storage.mirror_of(model_uri))
    assert (storage.mirror_of(model_uri) / "config.json").exists()

    embeddings = run_embed(EmbedConfig(prepared_dir=prepared, output_dir=f"{root}/embeddings",
                                       model=str(tiny_model_dir)))
    index = run_index(IndexConfig(embeddings_dir=embeddings, output_dir=f"{root}/index"))
    results = run_evaluate(EvalConfig(prepared_dir=prepared, index_dir=index, embeddings_dir=embeddings,
                                      output=f"{root}/eval/test.json"))
    assert "manifest.json" in _keys(s3, "shop/embeddings/") and "index.faiss" in _keys(s3, "shop/index/")
    saved = json.loads(s3.get_object(Bucket=BUCKET, Key="shop/eval/test.json")["Body"].read())
    bm25 = saved["systems"]["bm25"]["mean"]["ndcg@10"]
    assert bm25 == pytest.approx(results["systems"]["bm25"]["mean"]["ndcg@10"])
    assert 0 < bm25 <= 1
    loaded = ProductIndex.load(storage.pull(index), use_gpu="no")
    assert loaded.manifest["count"] == json.loads(s3.get_object(
        Bucket=BUCKET, Key="shop/data/manifest.json")["Body"].read())["counts"]["products"]

    # a second run finds every stage's output current in the bucket: nothing is rebuilt or uploaded
    before = {o["Key"]: o["LastModified"]
              for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="shop/embeddings/")["Contents"]}
    assert run_embed(EmbedConfig(prepared_dir=prepared, output_dir=f"{root}/embeddings",
                                 model=str(tiny_model_dir))) == embeddings
    after = {o["Key"]: o["LastModified"]
             for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="shop/embeddings/")["Contents"]}
    assert before == after


def test_soups_and_ensembles_combine_models_in_the_bucket_into_the_bucket(s3, tiny_model_dir, wide_model_dir,
                                                                           tmp_path):
    """On a cluster whose nodes share no disk the runs' models live in the bucket: `firstlight soup` and
    `firstlight ensemble` take them as URIs and write their output there, and every stage (the
    server included) loads an ensemble by its URI."""
    import shutil

    import numpy as np

    from common.errors import ConfigError
    from model.encoder import TextEncoder
    from model.ensemble import EnsembleConfig, run_ensemble
    from model.soup import SoupConfig, run_soup

    root = f"s3://{BUCKET}/combine"
    for name, folder in (("tiny", tiny_model_dir), ("tiny-again", tiny_model_dir), ("wide", wide_model_dir)):
        shutil.copytree(folder, tmp_path / name)
        storage.push(tmp_path / name, f"{root}/{name}", marker="config.json")
    texts = ["cordless drill 18v", "white vinyl fence post"]

    uri = run_ensemble(EnsembleConfig(models=(f"{root}/tiny", f"{root}/wide"), weights=(1, 3),
                                      output_dir=f"{root}/ensemble"))
    assert uri == f"{root}/ensemble"
    keys = _keys(s3, "combine/ensemble/")
    assert {"firstlight_ensemble.json", "member-0/config.json", "member-1/model.safetensors"} <= set(keys)
    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key="combine/ensemble/firstlight_ensemble.json")["Body"]
                          .read())
    assert [m["source"] for m in manifest["members"]] == [f"{root}/tiny", f"{root}/wide"]  # not the local mirrors
    local = run_ensemble(EnsembleConfig(models=(str(tiny_model_dir), str(wide_model_dir)), weights=(1, 3),
                                        output_dir=str(tmp_path / "local")))
    np.testing.assert_allclose(TextEncoder.load(uri).encode(texts), TextEncoder.load(str(local)).encode(texts),
                               atol=1e-6)

    soup = run_soup(SoupConfig(models=(f"{root}/tiny", f"{root}/tiny-again"), output_dir=f"{root}/soup"))
    assert soup == f"{root}/soup" and "config.json" in _keys(s3, "combine/soup/")
    # the mean of one model's weights twice is that model
    np.testing.assert_allclose(TextEncoder.load(soup).encode(texts),
                               TextEncoder.load(str(tiny_model_dir)).encode(texts), atol=1e-5)

    with pytest.raises(ConfigError, match="no config.json") as err:
        run_ensemble(EnsembleConfig(models=(f"{root}/tiny", f"{root}/nothing"), output_dir=f"{root}/e2"))
    assert err.value.field == "models" and not _keys(s3, "combine/e2/")
    with pytest.raises(ConfigError, match="cannot be a member"):
        run_soup(SoupConfig(models=(f"{root}/tiny", uri), output_dir=f"{root}/s2"))


def test_a_cloud_input_needs_a_named_output(s3):
    from common.errors import ConfigError
    from data_pipeline.embed import EmbedConfig, run_embed

    with pytest.raises(ConfigError, match="output_dir"):
        run_embed(EmbedConfig(prepared_dir=f"s3://{BUCKET}/shop/data"))


@pytest.fixture(scope="module")
def s3_pipeline(s3, small_homedepot, tiny_model_dir, tmp_path_factory) -> dict:
    """`firstlight demo --finetune true --workdir s3://...`: every stage, training included."""
    from firstlight.pipeline import DemoConfig, run_demo

    recipe = tmp_path_factory.mktemp("recipe") / "recipe.yaml"
    recipe.write_text("optim: {max_steps: 2, batch_size: 8}\ndist: {cpus_per_worker: 0.5}\nhard_negatives: judged\n")
    cfg = DemoConfig(dataset="homedepot", data_dir=str(small_homedepot), workdir=f"s3://{BUCKET}/pipeline",
                     model=str(tiny_model_dir), finetune=True, train_recipe=str(recipe),
                     runtime=EncoderRuntime(product_max_length=32))
    return run_demo(cfg)


def test_the_whole_pipeline_with_fine_tuning_on_an_s3_storage_root(s3, s3_pipeline):
    results = s3_pipeline
    keys = _keys(s3, "pipeline/homedepot/")
    for folder in ("data", "embeddings", "index", "finetuned/embeddings", "finetuned/index"):
        assert f"{folder}/manifest.json" in keys, folder
    assert {"eval/test.json", "eval/test_finetuned.json", "train/model/config.json",
            "train/model/firstlight.json", "train/metrics.jsonl", "train/curves.png"} <= set(keys)
    # Ray Train wrote the checkpoint (DeepSpeed shards, trainer state, config) straight to the bucket
    checkpoint = sorted({k.split("/")[2] for k in keys if k.startswith("train/run/checkpoint_") and k.count("/") > 2})[-1]
    assert {f"train/run/{checkpoint}/trainer_state.json", f"train/run/{checkpoint}/train_config.json"} <= set(keys)
    assert any(k.startswith(f"train/run/{checkpoint}/state/") for k in keys)
    saved = json.loads(s3.get_object(Bucket=BUCKET, Key="pipeline/homedepot/eval/test_finetuned.json")["Body"].read())
    assert saved["model"] == f"s3://{BUCKET}/pipeline/homedepot/train/model"
    # the demo's closing table: the baselines, then the fine-tuned encoder (saved under its own name)
    assert saved["systems"]["dense"]["mean"] == pytest.approx(results["systems"]["fine-tuned dense"]["mean"])
    assert {"bm25", "zero-shot dense", "zero-shot fusion", "fine-tuned fusion"} <= set(results["systems"])


def test_serving_reads_its_index_and_catalogue_from_the_bucket(s3, s3_pipeline, tmp_path):
    """The Retriever's LiveIndex and the service config over the pipeline's s3:// artifacts."""
    import numpy as np

    from common.errors import ConfigError
    from data_pipeline.index import ProductIndex
    from ranking.hybrid import FirstStage
    from serve.config import ServeConfig
    from serve.live_index import LiveIndex

    index_uri = f"s3://{BUCKET}/pipeline/homedepot/index"
    with pytest.raises(ConfigError, match="state_dir"):  # an append-only change log needs a file system
        ServeConfig.from_args({"index_dir": index_uri}).validate()
    cfg = ServeConfig.from_args({"index_dir": index_uri, "state_dir": str(tmp_path / "state")})
    cfg.validate()
    assert cfg.resolved_prepared_dir() == f"s3://{BUCKET}/pipeline/homedepot/data"
    assert cfg.absolute().index_dir == index_uri
    assert cfg.resolved_model() == ProductIndex.load(storage.pull(index_uri), use_gpu="no").manifest["model"]

    live = LiveIndex(index_uri, cfg.resolved_prepared_dir(), tmp_path / "state" / "changes.jsonl", use_gpu="no")
    local = ProductIndex.load(storage.mirror_of(index_uri), use_gpu="no")
    query = np.random.default_rng(0).standard_normal((1, live.dim)).astype("float32")
    query /= np.linalg.norm(query)
    _, ids = local.search(query, 5)
    dense = FirstStage(mode="dense")  # the saved FAISS index's own ranking
    assert [hit["id"] for hit in live.search(query, ["any text"], 5, dense)[0]] == list(ids[0])


def test_the_event_log_copied_to_the_bucket_is_what_training_reads(s3, tmp_path):
    """events.upload_to over the S3 API: the bucket's copy reads back as the log folder does."""
    from data_pipeline.events import EVENTS, IMPRESSIONS, arm_counts, read_log
    from serve.event_log import AppendLog, EventLogging

    uri = f"s3://{BUCKET}/shop/events"
    log = AppendLog(tmp_path, EventLogging(flush_ms=1, upload_to=uri, upload_every_s=3600))
    for n in range(20):
        log.offer(IMPRESSIONS, {"request_id": f"r{n}", "ts": 10.0 + n, "arm": "control", "items": ["a", "b"]})
    assert log.append(EVENTS, [{"request_id": f"r{n}", "type": "click", "product_id": "b", "position": 2}
                               for n in range(0, 20, 4)]).result(timeout=10)
    log.close()
    assert _keys(s3, "shop/events/") == sorted(p.relative_to(tmp_path).as_posix()
                                               for p in tmp_path.glob("*/date=*/*.jsonl"))
    local, remote = read_log(tmp_path), read_log(uri)
    for mine, theirs in zip(local, remote):
        assert mine.sort_values("request_id").values.tolist() == theirs.sort_values("request_id").values.tolist()
    assert len(remote[0]) == 20 and len(remote[1]) == 5
    assert arm_counts(uri, since=0)["control"]["click"] == 5


def test_a_server_copies_its_event_log_to_the_bucket(s3, artifacts, tmp_path):  # noqa: F811
    """A served click, through events.upload_to, is in the bucket's copy within a few copy passes."""
    import time

    import requests

    from data_pipeline.events import read_log
    from tests.serving import post, served, small_app

    root, _ = artifacts
    uri = f"s3://{BUCKET}/served/events"
    cfg = small_app({"index_dir": str(root / "index"), "state_dir": str(tmp_path / "state"),
                     "events": {"flush_ms": 5, "upload_to": uri, "upload_every_s": 0.5}})
    with served(cfg) as url:
        reply = post(url, "/v1/recommend", {"text": "cordless drill", "k": 5}).json()
        clicked = reply["items"][1]["id"]
        assert post(url, "/v1/events", {"events": [{"type": "click", "request_id": reply["request_id"],
                                                    "product_id": clicked}]}).status_code == 200
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and {k.split("/")[1] for k in _keys(s3, "served/")} != {"events",
                                                                                                   "impressions"}:
            time.sleep(0.5)
        time.sleep(1.0)  # the pass that copied them has recorded them (counted) by now
        stats = requests.get(url + "/v1/stats", timeout=30).json()["events"]
    impressions, events = read_log(uri)
    assert reply["request_id"] in set(impressions["request_id"])
    assert events[["request_id", "product_id", "position"]].values.tolist() == [[reply["request_id"], clicked, 2]]
    assert stats["files_uploaded"] >= 2 and stats["upload_failures"] == 0
