"""The FirstLight Ray Serve application: Gateway (HTTP) -> Encoder (autoscaled) + Retriever (FAISS + BM25)
+ Reranker (autoscaled, when a cross-encoder is configured).

Start it with one command:

    firstlight serve --index-dir artifacts/homedepot/index            # or, with Ray's own CLI:
    serve run serve/config.yaml                                        # serve deploy serve/config.yaml

``build_app`` is a Serve application builder: `serve run serve.app:build_app index_dir=...` and the
``args`` of a config YAML reach it as a dict, checked by :class:`~serve.config.ServeConfig`.
"""

from __future__ import annotations

import logging
from dataclasses import asdict

from serve.config import ServeConfig
from serve.encoder_deployment import Encoder
from serve.gateway import Gateway
from serve.reranker_deployment import Reranker
from serve.retriever_deployment import Retriever

log = logging.getLogger(__name__)


def build_app(args: dict | ServeConfig):
    cfg = args if isinstance(args, ServeConfig) else ServeConfig.from_args(dict(args))
    cfg.validate()
    cfg = cfg.absolute()
    cfg.resolved_model()  # an index without a recorded model is refused here, not in a replica
    config = asdict(cfg)
    encoder = _autoscaled(Encoder, cfg, "encoder", cfg.batch_max_size).bind(config)
    retriever = Retriever.options(
        num_replicas=cfg.retriever_replicas, max_ongoing_requests=256,
        ray_actor_options={"num_cpus": cfg.retriever_num_cpus, "num_gpus": cfg.retriever_num_gpus},
    ).bind(config)
    reranker = _autoscaled(Reranker, cfg, "reranker", cfg.reranker_batch_max_size).bind(config) \
        if cfg.reranker else None
    return Gateway.options(num_replicas=cfg.gateway_replicas, max_ongoing_requests=512,
                           ray_actor_options={"num_cpus": cfg.gateway_num_cpus}).bind(config, encoder, retriever,
                                                                                      reranker)


def _autoscaled(deployment, cfg: ServeConfig, name: str, batch_max_size: int):
    """A model-holding deployment (``name`` encoder or reranker) with its replicas, autoscaling and CPUs/GPUs."""
    setting = lambda key: getattr(cfg, f"{name}_{key}")  # noqa: E731
    return deployment.options(
        autoscaling_config={"min_replicas": setting("min_replicas"), "max_replicas": setting("max_replicas"),
                            "target_ongoing_requests": setting("target_ongoing_requests"),
                            "upscale_delay_s": cfg.upscale_delay_s, "downscale_delay_s": cfg.downscale_delay_s,
                            "metrics_interval_s": 1.0, "look_back_period_s": 5.0},
        # a replica must accept a full batch's worth of requests for dynamic batching to fill it
        max_ongoing_requests=max(2 * batch_max_size, int(2 * setting("target_ongoing_requests"))),
        ray_actor_options={"num_cpus": setting("num_cpus"), "num_gpus": setting("num_gpus")},
    )


def run_serve(cfg: ServeConfig, blocking: bool = True) -> str:
    """Deploy the application on the current Ray (local or cluster); return its base URL."""
    import time

    from ray import serve

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
