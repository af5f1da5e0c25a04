"""The serving config: one typed object for `firstlight serve`, `serve run`/`serve deploy` and tests.

It composes the components every stage shares instead of copying their fields: ``first_stage``
(ranking/hybrid.py), ``rerank`` (ranking/rerank.py), ``runtime`` (model/runtime.py), ``constraints``
(ranking/constraints.py), ``events`` (serve/event_log.py); and its own:
``limits`` (the API contract) and one ``Resources`` per deployment (``encoder``, ``retriever``,
``reranker``, ``gateway``). Each deployment is bound to its own component only (serve/app.py).

Paths default to the layout the other stages write (INDEX/../data for titles, INDEX/../serve_state
for the live state), so pointing at an index is enough. Limits are part of the API contract: every
rejection names the field and the limit it broke.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

from common.config import Listed, build_config, check_range, listed
from common.errors import ConfigError
from common.paths import default_workdir
from common.storage import exists, is_uri, join, parent, read_text
from model.runtime import EncoderRuntime
from ranking.constraints import ConstraintReading
from ranking.hybrid import FirstStage
from ranking.rerank import RerankStage
from serve.event_log import EventLogging


@dataclass
class Resources:
    """One deployment's replicas, autoscaling, reservations and batching. ``min_replicas`` equal to
    ``max_replicas`` is a fixed number of replicas; below it, Serve's autoscaler moves between them.
    Flags ``--encoder.num_cpus``, YAML ``encoder: {batch_wait_s: 0.002}``."""

    min_replicas: int = field(default=1, metadata={"help": "replicas kept when idle"})
    max_replicas: int = field(default=1, metadata={"help": "replicas at most"})
    target_ongoing_requests: float = field(default=8.0, metadata={"help": "requests per replica the autoscaler aims at"})
    num_cpus: float = field(default=1.0, metadata={"help": "CPUs each replica reserves (fractions allowed)"})
    num_gpus: float = field(default=0.0, metadata={"help": "GPUs each replica reserves"})
    threads: int = field(default=0, metadata={
        "help": "torch threads per replica (0 = one per whole CPU reserved); more than reserved lowers latency "
                "on a small machine where requests rarely overlap"})
    batch_max_size: int = field(default=32, metadata={"help": "requests handled together at most (dynamic batching)"})
    batch_wait_s: float = field(default=0.005, metadata={"help": "longest wait to fill a batch"})
    upscale_delay_s: float = field(default=5.0, metadata={"help": "sustained load before adding replicas"})
    downscale_delay_s: float = field(default=60.0, metadata={"help": "sustained idleness before removing replicas"})

    def validate(self, prefix: str) -> None:
        check_range(prefix + "min_replicas", self.min_replicas, 1)
        check_range(prefix + "max_replicas", self.max_replicas, self.min_replicas)
        check_range(prefix + "target_ongoing_requests", self.target_ongoing_requests, 0.0, low_inclusive=False)
        check_range(prefix + "num_cpus", self.num_cpus, 0.0, low_inclusive=False)
        check_range(prefix + "num_gpus", self.num_gpus, 0.0)
        check_range(prefix + "threads", self.threads, 0)
        check_range(prefix + "batch_max_size", self.batch_max_size, 1)
        for name in ("batch_wait_s", "upscale_delay_s", "downscale_delay_s"):
            check_range(prefix + name, getattr(self, name), 0.0)

    @property
    def torch_threads(self) -> int:
        return self.threads or max(1, int(self.num_cpus))

    def deployment_options(self) -> dict:
        """Ray Serve ``.options()`` for a deployment with these resources."""
        actor = {"ray_actor_options": {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}}
        # a replica must accept a full batch's worth of requests for dynamic batching to fill it
        ongoing = max(2 * self.batch_max_size, int(2 * self.target_ongoing_requests))
        if self.min_replicas == self.max_replicas:
            return {"num_replicas": self.min_replicas, "max_ongoing_requests": ongoing, **actor}
        return {"autoscaling_config": {"min_replicas": self.min_replicas, "max_replicas": self.max_replicas,
                                       "target_ongoing_requests": self.target_ongoing_requests,
                                       "upscale_delay_s": self.upscale_delay_s,
                                       "downscale_delay_s": self.downscale_delay_s,
                                       "metrics_interval_s": 1.0, "look_back_period_s": 5.0},
                "max_ongoing_requests": ongoing, **actor}


@dataclass
class RequestLimits:
    """What one request may hold: part of the API contract (the OpenAPI document carries them)."""

    max_text_chars: int = field(default=1000, metadata={"help": "characters allowed per text"})
    max_text_tokens: int = field(default=128, metadata={"help": "tokens allowed per text (longer is an error)"})
    max_k: int = field(default=100, metadata={"help": "largest k a caller may ask for"})
    max_batch_texts: int = field(default=32, metadata={"help": "texts allowed in one /v1/recommend/batch call"})
    max_exclude: int = field(default=1000, metadata={"help": "product ids allowed in exclude"})
    max_session_clicks: int = field(default=20, metadata={"help": "clicked product ids allowed in a session"})
    max_events: int = field(default=100, metadata={"help": "events allowed in one POST /v1/events call"})
    max_body_bytes: int = field(default=65536, metadata={"help": "request body size cap"})
    max_headers: int = field(default=64, metadata={"help": "request headers allowed (431 beyond)"})
    max_header_bytes: int = field(default=16384, metadata={
        "help": "bytes of request headers allowed, names and values together (431 beyond)"})

    def validate(self, prefix: str = "limits.") -> None:
        for name in ("max_text_chars", "max_text_tokens", "max_k", "max_batch_texts", "max_body_bytes", "max_headers",
                     "max_header_bytes", "max_events"):
            check_range(prefix + name, getattr(self, name), 1)
        check_range(prefix + "max_exclude", self.max_exclude, 0)
        check_range(prefix + "max_session_clicks", self.max_session_clicks, 0)


@dataclass(frozen=True)
class EncoderPart:
    """What an Encoder replica is bound to."""

    model: str  # the configured model (loaded before taking traffic)
    runtime: EncoderRuntime
    resources: Resources


@dataclass(frozen=True)
class RetrieverPart:
    """What a Retriever replica is bound to."""

    index_dir: str
    model: str
    prepared_dir: str
    state_dir: str
    first_stage: FirstStage
    session_weight: float
    use_gpu: str
    resources: Resources
    encode_queries: bool = False  # encode queries here (int8 on a CPU) instead of in the Encoder
    query_max_length: int = 64


@dataclass(frozen=True)
class RerankerPart:
    """What a Reranker replica is bound to."""

    rerank: RerankStage
    runtime: EncoderRuntime
    resources: Resources


def _resources(**values):
    return field(default_factory=lambda: Resources(**values), metadata={"component": True})


# Settings that had a flat name before the components: an old config file fails naming the new key.
SERVE_RENAMED = {
    "max_length": "runtime.query_max_length", "use_gpu": "runtime.use_gpu", "backend": "runtime.backend",
    "first_stage_mode": "first_stage.mode", "fusion": "first_stage.fusion",
    "dense_weight": "first_stage.dense_weight", "rrf_k": "first_stage.rrf_k", "candidate_depth": "first_stage.depth",
    "rerank_depth": "rerank.depth", "rerank_weight": "rerank.weight", "rerank_timeout_s": "rerank.timeout_s",
    "reranker_max_length": "rerank.max_length",
    **{name: f"limits.{name}" for name in ("max_text_chars", "max_text_tokens", "max_k", "max_batch_texts",
                                          "max_exclude", "max_session_clicks", "max_body_bytes")},
    **{f"encoder_{name}": f"encoder.{name}" for name in ("min_replicas", "max_replicas",
                                                         "target_ongoing_requests", "num_cpus", "num_gpus")},
    **{f"reranker_{name}": f"reranker.{name}" for name in ("min_replicas", "max_replicas", "target_ongoing_requests",
                                                          "num_cpus", "num_gpus", "threads", "batch_max_size")},
    "upscale_delay_s": "encoder.upscale_delay_s", "downscale_delay_s": "encoder.downscale_delay_s",
    "batch_max_size": "encoder.batch_max_size", "batch_wait_s": "encoder.batch_wait_s",
    "retriever_replicas": "retriever.min_replicas", "retriever_num_cpus": "retriever.num_cpus",
    "retriever_num_gpus": "retriever.num_gpus", "gateway_replicas": "gateway.min_replicas",
    "gateway_num_cpus": "gateway.num_cpus", "reranker": "rerank.model", "spell_correct": "first_stage.spell_correct",
}


@dataclass
class ServeConfig:
    RENAMED: ClassVar[dict] = SERVE_RENAMED
    index_dir: str | None = field(default=None, metadata={"help": "FAISS index folder (the output of `index`)"})
    model: str | None = field(default=None, metadata={"help": "query encoder; default: the index's model"})
    prepared_dir: str | None = field(default=None, metadata={
        "help": "catalogue titles; default: the catalogue the index was built from"})
    state_dir: str | None = field(default=None, metadata={
        "help": "live state: active version and item changes, shared by all replicas; default INDEX/../serve_state"})
    session_weight: float = field(default=0.5, metadata={
        "help": "how far a session's clicks pull the query vector (Rocchio weight, tuned on val by "
                "benchmarks/quality/bench_session.py); 0 ignores clicks except to exclude them"})
    explain: bool = field(default=True, metadata={"help": "give every returned product its 'why'"})
    admin_token_env: str = field(default="FIRSTLIGHT_ADMIN_TOKEN", metadata={
        "help": "environment variable holding the admin bearer token (admin API off when neither is set)"})
    admin_token_file: str | None = field(default=None, metadata={
        "help": "or a file holding it (a mounted secret); the file wins over the variable"})
    reload_roots: Listed = field(default=(), metadata={
        "help": "folders (or bucket prefixes) an admin reload may load an index or model from; default: the "
                "workdir and the served index's parent folder"})
    retries: int = field(default=2, metadata={
        "help": "times a read (encode, search, rerank) is retried on another replica when its replica dies"})
    host: str = field(default="127.0.0.1", metadata={"help": "HTTP host (0.0.0.0 to listen on all interfaces)"})
    port: int = field(default=8000, metadata={"help": "HTTP port"})
    # the shared components
    first_stage: FirstStage = field(default_factory=FirstStage)
    rerank: RerankStage = field(default_factory=RerankStage)
    runtime: EncoderRuntime = field(default_factory=EncoderRuntime)
    limits: RequestLimits = field(default_factory=RequestLimits)
    constraints: ConstraintReading = field(default_factory=ConstraintReading)
    events: EventLogging = field(default_factory=EventLogging)
    # one per deployment
    encoder: Resources = _resources(min_replicas=1, max_replicas=4, target_ongoing_requests=8.0, num_cpus=1.0)
    # the Retriever encodes the queries too where the backend is int8 on a CPU (queries_in_retriever),
    # so it autoscales on its queue like the Encoder
    retriever: Resources = _resources(min_replicas=1, max_replicas=4, num_cpus=0.5, batch_max_size=64,
                                      batch_wait_s=0.002)
    reranker: Resources = _resources(min_replicas=1, max_replicas=4, target_ongoing_requests=4.0, num_cpus=1.0,
                                     batch_max_size=8)
    gateway: Resources = _resources(num_cpus=0.25)

    def __post_init__(self):
        self.reload_roots = listed(self.reload_roots)

    @classmethod
    def from_args(cls, args: dict) -> "ServeConfig":
        """From a Serve application's ``args`` (a config YAML's mapping, or `serve run ... key=value` with
        dotted keys for components, e.g. ``encoder.num_cpus=0.5``): the CLI's converter, one set of rules."""
        return build_config(cls, dict(args), source="the application's args")

    def validate(self) -> None:
        if not self.index_dir:
            raise ConfigError("index_dir", "is not set", "pass --index-dir (the output of `firstlight index`)")
        if is_uri(self.index_dir) and not self.state_dir:
            raise ConfigError("state_dir", "the change log of items added through the API is appended to and "
                              "fsync'ed, which object storage cannot do",
                              "pass --state_dir on a file system every Retriever replica shares")
        if is_uri(self.events.dir or ""):
            raise ConfigError("events.dir", "events are acknowledged once appended and fsync'ed, which object "
                              "storage cannot do", "log to a file system (a shared one when there are several "
                              f"gateway replicas) and pass --events.upload_to {self.events.dir} to copy the log there")
        if not exists(join(self.index_dir, "index.faiss")):
            raise ConfigError("index_dir", f"{self.index_dir} holds no FAISS index (index.faiss)",
                              "run `firstlight index` and pass its output folder")
        if not exists(join(self.resolved_prepared_dir(), "catalogue")):
            raise ConfigError("prepared_dir", f"{self.resolved_prepared_dir()} holds no prepared catalogue",
                              "pass --prepared-dir (the output of `firstlight prepare`)")
        self.first_stage.validate("first_stage.")
        self.runtime.validate("runtime.")
        self.limits.validate("limits.")
        self.constraints.validate("constraints.")
        self.events.validate("events.")
        for name in ("encoder", "retriever", "reranker", "gateway"):
            getattr(self, name).validate(f"{name}.")
        if self.rerank.model is not None:
            if not exists(join(self.rerank.model, "config.json")):
                raise ConfigError("rerank.model", f"{self.rerank.model} holds no model (config.json)",
                                  "pass the model folder `firstlight train-reranker` wrote, or leave it unset")
            self.rerank.validate("rerank.")
        check_range("retries", self.retries, 0)
        check_range("session_weight", self.session_weight, 0.0)
        check_range("port", self.port, 1, 65535)
        if self.admin_token_file and not Path(self.admin_token_file).is_file():
            raise ConfigError("admin_token_file", f"{self.admin_token_file} does not exist",
                              "point it at a file holding the admin token, or leave it unset")

    def admin_token(self) -> str | None:
        import os

        if self.admin_token_file:
            token = Path(self.admin_token_file).read_text().strip()
            return token or None
        return os.environ.get(self.admin_token_env) or None

    def resolved_prepared_dir(self) -> str:
        """``prepared_dir``, else INDEX/../data (the layout the stages write), else the catalogue the
        index records it was built from (a fine-tuned model's index lives in a folder of its own)."""
        if self.prepared_dir:
            return self.prepared_dir
        beside = join(parent(self.index_dir), "data")
        if exists(join(beside, "catalogue")):
            return beside
        recorded = self._index_manifest().get("prepared_dir")
        return recorded if recorded and exists(join(recorded, "catalogue")) else beside

    def resolved_state_dir(self) -> str:
        return str(Path(self.state_dir) if self.state_dir else Path(self.index_dir).parent / "serve_state")

    def resolved_events_dir(self) -> str:
        """Where impressions and events are logged: ``events.dir``, else SERVE_STATE/events."""
        return self.events.dir or str(Path(self.resolved_state_dir()) / "events")

    def resolved_model(self) -> str:
        if self.model:
            return self.model
        model = self._index_manifest().get("model")
        if not model:
            raise ConfigError("model", f"the index in {self.index_dir} does not record its model", "pass --model")
        return model

    def _index_manifest(self) -> dict:
        try:
            manifest = json.loads(read_text(join(self.index_dir, "manifest.json")))
        except (OSError, ValueError, FileNotFoundError):
            return {}
        return manifest if isinstance(manifest, dict) else {}

    def resolved_reload_roots(self) -> tuple[str, ...]:
        """Where admin reloads may load from: ``reload_roots``, else the workdir and INDEX/.."""
        if self.reload_roots:
            return tuple(r if is_uri(r) else str(Path(r).expanduser().resolve()) for r in self.reload_roots)
        index_parent = parent(self.index_dir) if is_uri(self.index_dir) else str(Path(self.index_dir).resolve().parent)
        return str(default_workdir().resolve()), index_parent

    def absolute(self) -> "ServeConfig":
        """The same config with absolute paths and the model decided: replicas may run in another
        working directory."""
        return replace(self, index_dir=_absolute(self.index_dir), model=self.resolved_model(),
                       reload_roots=self.resolved_reload_roots(),
                       prepared_dir=_absolute(self.resolved_prepared_dir()),
                       state_dir=str(Path(self.resolved_state_dir()).resolve()),
                       events=replace(self.events, dir=str(Path(self.resolved_events_dir()).resolve())),
                       rerank=replace(self.rerank, model=_absolute(self.rerank.model)) if self.rerank.model
                       else self.rerank,
                       admin_token_file=str(Path(self.admin_token_file).resolve()) if self.admin_token_file else None)

    # -- what each deployment is bound to (call on the absolute() config) ----------------------
    def encoder_part(self) -> EncoderPart:
        return EncoderPart(self.resolved_model(), self.runtime, self.encoder)

    def retriever_part(self) -> RetrieverPart:
        return RetrieverPart(self.index_dir, self.resolved_model(), self.resolved_prepared_dir(),
                             self.resolved_state_dir(), self.first_stage, self.session_weight,
                             self.runtime.use_gpu, self.retriever, self.queries_in_retriever(),
                             self.runtime.query_max_length)

    def queries_in_retriever(self) -> bool:
        """Whether the Retriever encodes shoppers' queries itself (one Ray hop per request instead of
        two): where the Encoder would run the int8 backend on a CPU anyway. An Encoder on a GPU, or in
        fp32/bf16, keeps encoding them (serve/ranking_path.py)."""
        return self.runtime.int8_on_cpu(self.encoder.num_gpus)

    def reranker_part(self) -> RerankerPart:
        return RerankerPart(self.rerank, self.runtime, self.reranker)


# Index and catalogue folders may be cloud URIs (replicas fetch them, see firstlight.storage).
def _absolute(path: str) -> str:
    return path if is_uri(path) else str(Path(path).resolve())
