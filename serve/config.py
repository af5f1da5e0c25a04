"""The serving config: one typed object for `firstlight serve`, `serve run`/`serve deploy` and tests.

Paths default to the layout the other stages write (INDEX/../data for titles, INDEX/../serve_state
for the live state), so pointing at an index is enough. Limits are part of the API contract: every
rejection names the field and the limit it broke.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from common.config import check_choice, check_range
from common.errors import ConfigError
from common.hardware import check_backend
from common.storage import exists, is_uri, join, parent, read_text
from ranking.hybrid import FirstStage


@dataclass
class ServeConfig:
    index_dir: str | None = field(default=None, metadata={"help": "FAISS index folder (the output of `index`)"})
    model: str | None = field(default=None, metadata={"help": "query encoder; default: the index's model"})
    prepared_dir: str | None = field(default=None, metadata={"help": "catalogue titles; default INDEX/../data"})
    state_dir: str | None = field(default=None, metadata={
        "help": "live state: active version and item changes, shared by all replicas; default INDEX/../serve_state"})
    max_length: int = field(default=64, metadata={"help": "tokens the encoder keeps per text"})
    use_gpu: str = field(default="auto", metadata={"help": "FAISS and encoder on GPU: auto, yes or no"})
    backend: str = field(default="auto", metadata={
        "help": "inference backend of the encoder and the reranker: auto (int8 on a CPU, bf16 on a GPU with "
                "bf16 units), fp32, bf16 or int8 (ONNX Runtime, CPU); docs/speed.md"})
    spell_correct: bool = field(default=True, metadata={
        "help": "correct query words unknown to the catalogue (and to English) before encoding"})
    # the ranking path (ranking/): first stage, then the reranker
    first_stage_mode: str = field(default=FirstStage.mode, metadata={
        "help": "hybrid (BM25 + FAISS fused), dense or lexical"})
    fusion: str = field(default=FirstStage.fusion, metadata={"help": "hybrid: wsum (weighted min-max scores) or rrf"})
    dense_weight: float = field(default=FirstStage.dense_weight, metadata={
        "help": "hybrid wsum: the dense side's weight (BM25 gets 1 - it)"})
    rrf_k: int = field(default=FirstStage.rrf_k, metadata={"help": "hybrid rrf: the rank constant"})
    candidate_depth: int = field(default=FirstStage.depth, metadata={
        "help": "products each first-stage side retrieves before fusing"})
    reranker: str | None = field(default=None, metadata={
        "help": "cross-encoder folder (`firstlight train-reranker`'s OUTPUT/model); none = no second stage"})
    rerank_depth: int = field(default=10, metadata={"help": "first-stage products the reranker reorders per request"})
    rerank_weight: float = field(default=0.6, metadata={
        "help": "the reranker's share of a blended score with the first stage's (1 = reranker alone)"})
    rerank_timeout_s: float = field(default=2.0, metadata={
        "help": "longest wait for the reranker before answering with the first-stage ranking"})
    reranker_max_length: int = field(default=128, metadata={"help": "tokens per (query, product) pair"})
    session_weight: float = field(default=0.5, metadata={
        "help": "how far a session's clicks pull the query vector (Rocchio weight, tuned on val by "
                "benchmarks/bench_session.py); 0 ignores clicks except to exclude them"})
    explain: bool = field(default=True, metadata={"help": "give every returned product its 'why'"})
    # request limits
    max_text_chars: int = field(default=1000, metadata={"help": "characters allowed per text"})
    max_text_tokens: int = field(default=128, metadata={"help": "tokens allowed per text (longer is an error)"})
    max_k: int = field(default=100, metadata={"help": "largest k a caller may ask for"})
    max_batch_texts: int = field(default=32, metadata={"help": "texts allowed in one /v1/recommend/batch call"})
    max_exclude: int = field(default=1000, metadata={"help": "product ids allowed in exclude"})
    max_session_clicks: int = field(default=20, metadata={"help": "clicked product ids allowed in a session"})
    max_body_bytes: int = field(default=65536, metadata={"help": "request body size cap"})
    admin_token_env: str = field(default="FIRSTLIGHT_ADMIN_TOKEN", metadata={
        "help": "environment variable holding the admin bearer token (admin API off when neither is set)"})
    admin_token_file: str | None = field(default=None, metadata={
        "help": "or a file holding it (a mounted secret); the file wins over the variable"})
    # replicas, batching, autoscaling
    encoder_min_replicas: int = field(default=1, metadata={"help": "Encoder replicas kept when idle"})
    encoder_max_replicas: int = field(default=4, metadata={"help": "Encoder replicas at most"})
    encoder_target_ongoing_requests: float = field(default=8.0, metadata={
        "help": "requests per Encoder replica the autoscaler aims at"})
    encoder_num_cpus: float = field(default=1.0, metadata={"help": "CPUs per Encoder replica (fractions allowed)"})
    encoder_num_gpus: float = field(default=0.0, metadata={"help": "GPUs per Encoder replica"})
    upscale_delay_s: float = field(default=5.0, metadata={"help": "sustained load before adding replicas"})
    downscale_delay_s: float = field(default=60.0, metadata={"help": "sustained idleness before removing replicas"})
    batch_max_size: int = field(default=32, metadata={"help": "texts encoded together at most (dynamic batching)"})
    batch_wait_s: float = field(default=0.005, metadata={"help": "longest wait to fill a batch"})
    reranker_min_replicas: int = field(default=1, metadata={"help": "Reranker replicas kept when idle"})
    reranker_max_replicas: int = field(default=4, metadata={"help": "Reranker replicas at most"})
    reranker_target_ongoing_requests: float = field(default=4.0, metadata={
        "help": "requests per Reranker replica the autoscaler aims at"})
    reranker_num_cpus: float = field(default=1.0, metadata={"help": "CPUs per Reranker replica"})
    reranker_threads: int = field(default=0, metadata={
        "help": "torch threads per Reranker replica (0 = one per whole CPU reserved); more than reserved "
                "lowers latency on a small machine where requests rarely overlap"})
    reranker_num_gpus: float = field(default=0.0, metadata={"help": "GPUs per Reranker replica"})
    reranker_batch_max_size: int = field(default=8, metadata={"help": "requests scored together at most"})
    retriever_replicas: int = field(default=1, metadata={
        "help": "Retriever replicas (each holds the index; two or more survive losing one)"})
    retriever_num_cpus: float = field(default=0.5, metadata={"help": "CPUs per Retriever replica"})
    retriever_num_gpus: float = field(default=0.0, metadata={"help": "GPUs for the Retriever replica"})
    gateway_replicas: int = field(default=1, metadata={"help": "HTTP gateway replicas"})
    retries: int = field(default=2, metadata={
        "help": "times a read (encode, search, rerank) is retried on another replica when its replica dies"})
    gateway_num_cpus: float = field(default=0.25, metadata={"help": "CPUs per gateway replica"})
    host: str = field(default="127.0.0.1", metadata={"help": "HTTP host (0.0.0.0 to listen on all interfaces)"})
    port: int = field(default=8000, metadata={"help": "HTTP port"})

    def validate(self) -> None:
        if not self.index_dir:
            raise ConfigError("index_dir", "is not set", "pass --index-dir (the output of `firstlight index`)")
        if is_uri(self.index_dir) and not self.state_dir:
            raise ConfigError("state_dir", "the change log of items added through the API is appended to and "
                              "fsync'ed, which object storage cannot do",
                              "pass --state-dir on a file system every Retriever replica shares")
        if not exists(join(self.index_dir, "index.faiss")):
            raise ConfigError("index_dir", f"{self.index_dir} holds no FAISS index (index.faiss)",
                              "run `firstlight index` and pass its output folder")
        if not exists(join(self.resolved_prepared_dir(), "catalogue")):
            raise ConfigError("prepared_dir", f"{self.resolved_prepared_dir()} holds no prepared catalogue",
                              "pass --prepared-dir (the output of `firstlight prepare`)")
        check_choice("use_gpu", self.use_gpu, ("auto", "yes", "no"))
        check_backend("backend", self.backend)
        stage = self.first_stage()
        stage.validate()
        if self.reranker is not None:
            if not exists(join(self.reranker, "config.json")):
                raise ConfigError("reranker", f"{self.reranker} holds no model (config.json)",
                                  "pass the model folder `firstlight train-reranker` wrote, or leave it unset")
            check_range("rerank_depth", self.rerank_depth, 1, self.max_k_candidates())
            check_range("rerank_weight", self.rerank_weight, 0.0, 1.0)
            check_range("rerank_timeout_s", self.rerank_timeout_s, 0.0, low_inclusive=False)
            for name in ("reranker_max_length", "reranker_min_replicas", "reranker_batch_max_size"):
                check_range(name, getattr(self, name), 1)
            check_range("reranker_max_replicas", self.reranker_max_replicas, self.reranker_min_replicas)
            check_range("reranker_num_cpus", self.reranker_num_cpus, 0.0, low_inclusive=False)
            check_range("reranker_threads", self.reranker_threads, 0)
        for name in ("max_length", "max_text_chars", "max_text_tokens", "max_k", "max_batch_texts",
                     "max_body_bytes", "encoder_min_replicas", "batch_max_size", "gateway_replicas",
                     "retriever_replicas"):
            check_range(name, getattr(self, name), 1)
        check_range("max_exclude", self.max_exclude, 0)
        check_range("retries", self.retries, 0)
        check_range("max_session_clicks", self.max_session_clicks, 0)
        check_range("session_weight", self.session_weight, 0.0)
        check_range("encoder_max_replicas", self.encoder_max_replicas, self.encoder_min_replicas)
        check_range("encoder_target_ongoing_requests", self.encoder_target_ongoing_requests, 0.0, low_inclusive=False)
        for name in ("encoder_num_cpus", "retriever_num_cpus", "gateway_num_cpus"):
            check_range(name, getattr(self, name), 0.0, low_inclusive=False)
        for name in ("encoder_num_gpus", "retriever_num_gpus", "batch_wait_s", "upscale_delay_s", "downscale_delay_s"):
            check_range(name, getattr(self, name), 0.0)
        check_range("port", self.port, 1, 65535)
        if self.admin_token_file and not Path(self.admin_token_file).is_file():
            raise ConfigError("admin_token_file", f"{self.admin_token_file} does not exist",
                              "point it at a file holding the admin token, or leave it unset")

    def first_stage(self) -> FirstStage:
        return FirstStage(mode=self.first_stage_mode, fusion=self.fusion, dense_weight=self.dense_weight,
                          rrf_k=self.rrf_k, depth=self.candidate_depth)

    def max_k_candidates(self) -> int:
        """The most products the first stage can hand on (its depth, counting both sides)."""
        return self.candidate_depth if self.first_stage_mode != "hybrid" else 2 * self.candidate_depth

    def admin_token(self) -> str | None:
        import os

        if self.admin_token_file:
            token = Path(self.admin_token_file).read_text().strip()
            return token or None
        return os.environ.get(self.admin_token_env) or None

    def resolved_prepared_dir(self) -> str:
        return self.prepared_dir or join(parent(self.index_dir), "data")

    def resolved_state_dir(self) -> str:
        return str(Path(self.state_dir) if self.state_dir else Path(self.index_dir).parent / "serve_state")

    def resolved_model(self) -> str:
        if self.model:
            return self.model
        manifest = json.loads(read_text(join(self.index_dir, "manifest.json")))
        if not manifest.get("model"):
            raise ConfigError("model", f"the index in {self.index_dir} does not record its model", "pass --model")
        return manifest["model"]

    def absolute(self) -> "ServeConfig":
        """The same config with absolute paths: replicas may run in another working directory."""
        return ServeConfig(**{**asdict(self), "index_dir": _absolute(self.index_dir),
                              "prepared_dir": _absolute(self.resolved_prepared_dir()),
                              "state_dir": str(Path(self.resolved_state_dir()).resolve()),
                              "reranker": _absolute(self.reranker) if self.reranker else None,
                              "admin_token_file": str(Path(self.admin_token_file).resolve())
                              if self.admin_token_file else None})

    @classmethod
    def from_args(cls, args: dict) -> "ServeConfig":
        """From a Serve application's ``args`` (YAML or `serve run ... key=value`): values may be strings."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(args) - set(known))
        if unknown:
            raise ConfigError(unknown[0], "is not a serving option", f"use one of {', '.join(known)}")
        converted = {}
        for name, value in args.items():
            default = known[name].default
            if isinstance(value, str) and isinstance(default, (bool, int, float)) and not isinstance(default, str):
                try:
                    value = type(default)(value) if not isinstance(default, bool) else value.lower() in ("1", "true", "yes")
                except ValueError:
                    kind = "a whole number" if isinstance(default, int) else "a number"
                    raise ConfigError(name, f"{value!r} is not {kind}", f"give {kind}") from None
            converted[name] = value
        return cls(**converted)


# Index and catalogue folders may be cloud URIs (replicas fetch them, see firstlight.storage).
def _absolute(path: str) -> str:
    return path if is_uri(path) else str(Path(path).resolve())
