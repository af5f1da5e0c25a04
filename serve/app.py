"""The FirstLight Ray Serve application: Gateway (HTTP) -> Retriever (FAISS + BM25; on a CPU it also
encodes the queries, autoscaled) + Encoder (queries on a GPU, products added through the API;
autoscaled) + Reranker (autoscaled, when a cross-encoder is configured).

Start it with one command:

    firstlight serve --index_dir artifacts/homedepot/index            # or, with Ray's own CLI:
    serve run serve/config.yaml                                        # serve deploy serve/config.yaml

``build_app`` is a Serve application builder: `serve run serve.app:build_app index_dir=...` and the
``args`` of a config YAML reach it as a dict (components as mappings, or dotted keys such as
``encoder.num_cpus=0.5``), checked by :class:`~serve.config.ServeConfig`.
"""

from __future__ import annotations

import logging

from serve.config import ServeConfig
from serve.encoder_deployment import Encoder
from serve.gateway import Gateway
from serve.placement import fit_to_cluster
from serve.reranker_deployment import Reranker
from serve.retriever_deployment import Retriever

log = logging.getLogger(__name__)


def build_app(args: dict | ServeConfig):
    cfg = args if isinstance(args, ServeConfig) else ServeConfig.from_args(dict(args))
    cfg.validate()
    cfg = cfg.absolute()  # also decides the model: an index without a recorded one is refused here
    # each deployment is bound to its own part of the config, never the whole of it
    encoder = Encoder.options(**cfg.encoder.deployment_options()).bind(cfg.encoder_part())
    retriever = Retriever.options(**{**cfg.retriever.deployment_options(), "max_ongoing_requests": 256}) \
        .bind(cfg.retriever_part())
    # the Reranker admits or refuses every request itself (its latency budget), so none waits in a router queue
    reranker = Reranker.options(**{**cfg.reranker.deployment_options(), "max_ongoing_requests": 256}) \
        .bind(cfg.reranker_part()) if cfg.rerank.model else None
    return Gateway.options(**{**cfg.gateway.deployment_options(), "max_ongoing_requests": 512}) \
        .bind(cfg, encoder, retriever, reranker)


def run_serve(cfg: ServeConfig, blocking: bool = True) -> str:
    """Deploy the application on the current Ray (local or cluster); return its base URL. Every
    deployment is placed (default reservations shrink to fit the cluster), or it stops before
    deploying anything, naming the one that cannot be (serve/placement.py)."""
    import time

    import ray
    from ray import serve

    cfg = fit_to_cluster(cfg, ray.available_resources())
    serve.start(http_options={"host": cfg.host, "port": cfg.port})
    serve.run(build_app(cfg), name="firstlight", route_prefix="/")
    url = f"http://{cfg.host}:{cfg.port}"
    log.info("[serve] FirstLight answers at %s (API docs at %s/docs); Ctrl-C stops it", url, url)
    if blocking:
        import signal

        def stop(*_):
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, stop)  # `kill` and container stops shut down as cleanly as Ctrl-C
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            serve.shutdown()
    return url
