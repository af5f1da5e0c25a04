"""What the serving tests share: a small application's config, a free port, the artifacts two index
versions are served from, the served application, and a POST helper."""

from __future__ import annotations

import shutil
import socket
from contextlib import contextmanager

import pytest
import requests

from data_pipeline.index import ProductIndex
from data_pipeline.prepare import PrepareConfig, load_catalogue, run_prepare
from serve.config import ServeConfig

TOKEN = "s3cret-admin-token"


# Every deployment small enough that a whole application fits 2 cores beside the test session; lists
# served as ranked (no swapped share) unless a test asks for swaps, so tests may check the order.
SMALL_APP = {"encoder": {"num_cpus": 0.25, "max_replicas": 1}, "retriever": {"num_cpus": 0.25},
             "reranker": {"num_cpus": 0.25, "max_replicas": 1}, "gateway": {"num_cpus": 0.1},
             "events": {"swap_share": 0.0}}


def small_app(settings: dict) -> ServeConfig:
    """A serving config over SMALL_APP, on a free port; ``settings`` as a config file's (dotted keys)."""
    merged = {**SMALL_APP, "port": free_port()}
    for key, value in settings.items():  # a deployment's settings add to SMALL_APP's, never replace them
        merged[key] = {**merged[key], **value} if isinstance(value, dict) and key in SMALL_APP else value
    return ServeConfig.from_args(merged)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def artifacts(small_homedepot, tmp_path_factory, ray_session):
    """prepare -> embed (MiniLM) -> two saved indexes (two versions to switch between)."""
    from model.encoder import TextEncoder
    from model.folders import DEFAULT_MODEL

    root = tmp_path_factory.mktemp("serve")
    prepared = run_prepare(PrepareConfig(dataset="homedepot", data_dir=str(small_homedepot),
                                         output_dir=str(root / "data")))
    catalogue = load_catalogue(prepared)
    vectors = TextEncoder.load(DEFAULT_MODEL).encode(catalogue["text"].tolist(), batch_size=128)
    index = ProductIndex.build(catalogue["product_id"].tolist(), vectors, model=DEFAULT_MODEL)
    index.save(root / "index")
    shutil.copytree(root / "index", root / "index_v2")
    (root / "token").write_text(TOKEN + "\n")
    return root, catalogue


@contextmanager
def served(cfg: ServeConfig, name: str = "firstlight"):
    """FirstLight's application for ``cfg`` on 127.0.0.1:``cfg.port`` (its URL), shut down afterwards."""
    from ray import serve

    from serve.app import build_app

    serve.start(http_options={"host": "127.0.0.1", "port": cfg.port})
    try:
        serve.run(build_app(cfg), name=name, route_prefix="/")
        yield f"http://127.0.0.1:{cfg.port}"
    finally:
        serve.shutdown()


def post(url, path, body=None, token=None, **kwargs):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.post(url + path, json=body, headers=headers, timeout=60, **kwargs)
