"""The embed stage: encode the whole catalogue with Ray Data over a pool of encoder actors.

Each actor loads the encoder once and embeds batches of product texts (with the int8 backend on a
CPU, without torch: data_pipeline/onnx_actor.py); results are written as
Parquet rows of ``product_id`` and a fixed-size float32 ``embedding`` list, readable by any Parquet
tool. Ray Data shows progress while it runs; a folder whose manifest matches the same catalogue,
model and settings is reused as it is.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pyarrow as pa

from common import storage
from common.config import check_range
from common.errors import ConfigError, FirstLightError
from common.manifest import atomic_folder, read_manifest, up_to_date, write_json
from data_pipeline.onnx_actor import OnnxEncoderActor
from data_pipeline.vectors import load_embeddings, vectors_to_arrow
from model.backends import export_int8_file
from model.encoder import TextEncoder
from model.folders import (
    DEFAULT_MODEL,
    absolute_if_folder,
    model_fingerprint,
    resolve_model_path,
)
from model.onnx_text import unsupported
from model.runtime import EncoderRuntime

log = logging.getLogger(__name__)


@dataclass
class Actors:
    """The encoder actor pool Ray Data embeds with: the component embed and the demo share."""

    count: int = field(default=1, metadata={"help": "encoder actors in the pool"})
    cpus: float = field(default=1.0, metadata={
        "help": "CPUs each actor reserves; leave at least one CPU free for Ray Data's read and write tasks"})
    gpus: float = field(default=0.0, metadata={"help": "GPUs each actor reserves (0 = CPU)"})
    threads: int = field(default=0, metadata={
        "help": "torch threads per CPU actor; 0 = the CPUs this node has left to the actors"})

    def validate(self, prefix: str = "actors.") -> None:
        check_range(prefix + "count", self.count, 1, 4096)
        check_range(prefix + "cpus", self.cpus, 0.0, 1024)
        check_range(prefix + "gpus", self.gpus, 0.0, 64)
        check_range(prefix + "threads", self.threads, 0, 1024)

    def check_fits(self, cluster: dict) -> None:
        """Fail before starting when the actor pool would starve the read/write tasks (a silent hang)."""
        cpus = cluster.get("CPU", 0)
        if self.gpus == 0 and self.count * self.cpus > cpus - 1:
            raise ConfigError("actors.cpus", f"{self.count} actor(s) x {self.cpus:g} CPU leave less than "
                              f"one of the cluster's {cpus:g} CPUs for reading and writing, so the job would hang",
                              f"use --actors.count/--actors.cpus that add up to at most {max(cpus - 1, 0):g} "
                              "(threads are set apart with --actors.threads)")
        if self.gpus and self.count * self.gpus > cluster.get("GPU", 0):
            raise ConfigError("actors.gpus", f"{self.count} actor(s) x {self.gpus:g} GPU exceed the "
                              f"cluster's {cluster.get('GPU', 0):g} GPUs", "lower --actors.count or --actors.gpus")

    def torch_threads(self, cluster: dict) -> int:
        if self.gpus:
            return 0
        if self.threads:
            return self.threads
        if cluster.get("nodes", 1) <= 1:
            # One machine: the actors may use every core; read/write tasks are short and mostly I/O.
            return max(1, int(cluster.get("CPU", 1)) // self.count)
        return max(1, round(self.cpus))


# flat names the actor pool's settings had before it was a component
ACTORS_RENAMED = {"actors": "actors.count", "cpus_per_actor": "actors.cpus", "gpus_per_actor": "actors.gpus",
                  "threads_per_actor": "actors.threads"}


@dataclass
class EmbedConfig:
    prepared_dir: str | None = field(default=None, metadata={"help": "output of `prepare` (holds catalogue/)"})
    output_dir: str | None = field(default=None, metadata={"help": "default: PREPARED/../embeddings"})
    model: str = field(default=DEFAULT_MODEL, metadata={"help": "encoder folder or hub name"})
    batch_size: int = field(default=1024, metadata={
        "help": "products per Ray Data batch; larger batches sort by length over more texts (less padding)"})
    actors: Actors = field(default_factory=Actors)
    # how the encoder runs (backend, product_max_length): the component evaluate and serve use too
    runtime: EncoderRuntime = field(default_factory=EncoderRuntime)

    RENAMED: ClassVar[dict] = {"max_length": "runtime.product_max_length", "backend": "runtime.backend",
                               **ACTORS_RENAMED}

    def validate(self) -> None:
        self.runtime.validate("runtime.")
        check_range("batch_size", self.batch_size, 1, 1 << 20)
        self.actors.validate()

    def resolved_output_dir(self) -> Path:
        return Path(self.output_dir) if self.output_dir else Path(self.prepared_dir).parent / "embeddings"


class EncoderActor:
    """Ray Data callable class: one encoder per actor, reused for every batch it receives."""

    def __init__(self, model: str, max_length: int, backend: str, threads: int):
        import torch

        if threads > 0:
            torch.set_num_threads(threads)
        self.encoder = TextEncoder.load(model, max_length=max_length, backend=backend)

    def __call__(self, batch: pa.Table) -> pa.Table:
        vectors = self.encoder.encode(batch["text"].to_pylist(), batch_size=64, role="passage")
        return pa.table({"product_id": batch["product_id"], "embedding": vectors_to_arrow(vectors)})


def cluster_resources() -> dict:
    import ray

    resources = dict(ray.cluster_resources())
    resources["nodes"] = sum(1 for n in ray.nodes() if n.get("Alive"))
    return resources


def runs_without_torch(cfg: EmbedConfig) -> bool:
    """Whether the actors run the int8 backend on a CPU with a model model/onnx_text.py can run."""
    return cfg.runtime.int8_on_cpu(cfg.actors.gpus) and unsupported(cfg.model) is None


def embed_dataset(ds, cfg: EmbedConfig):
    """The Ray Data pipeline: a dataset with ``product_id`` and ``text`` -> ids + embeddings."""
    import ray.data

    cluster = cluster_resources()
    cfg.actors.check_fits(cluster)
    threads = cfg.actors.torch_threads(cluster)
    # a local folder by its absolute path: actors do not share the driver's working directory
    model = absolute_if_folder(cfg.model)
    actor, kwargs = EncoderActor, {"model": model, "max_length": cfg.runtime.product_max_length, "threads": threads}
    if runs_without_torch(cfg):
        # exported here, once, before the actors start (this node's actors then find it cached)
        export_int8_file(resolve_model_path(model), "encoder")
        actor = OnnxEncoderActor
    else:
        kwargs["backend"] = cfg.runtime.backend
    return ds.map_batches(
        actor, fn_constructor_kwargs=kwargs, batch_size=cfg.batch_size, batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=cfg.actors.count),
        num_cpus=cfg.actors.cpus, num_gpus=cfg.actors.gpus)


def run_embed(cfg: EmbedConfig) -> Path:
    """Embed the prepared catalogue; return the embeddings folder."""
    import ray.data

    if storage.uses_uri(cfg, ("prepared_dir", "output_dir")):
        return storage.run_on_mirrors(run_embed, cfg, inputs=("prepared_dir",), outputs=("output_dir",))
    cfg.validate()
    if not cfg.prepared_dir:
        raise FirstLightError("embed needs the prepared data. Fix: pass --prepared_dir (the output of prepare)")
    prepared = Path(cfg.prepared_dir)
    source = read_manifest(prepared)
    if source is None:
        raise FirstLightError(f"{prepared} holds no prepared data. Fix: run `firstlight prepare` first")
    out = cfg.resolved_output_dir()
    key = {"catalogue": source["inputs_key"]["inputs"], "model": model_fingerprint(cfg.model),
           "max_length": cfg.runtime.product_max_length, "backend": cfg.runtime.backend}
    if up_to_date(out, key):
        log.info("[embed] %s is up to date; reusing it", out)
        return out
    n = source["counts"]["products"]
    log.info("[embed] %d products with %s on %d actor(s) x %g CPU / %g GPU", n, cfg.model, cfg.actors.count,
             cfg.actors.cpus, cfg.actors.gpus)
    start = time.perf_counter()
    with atomic_folder(out) as tmp:
        # Blocks of a few batches: the progress bar moves as they finish and every actor gets work.
        catalogue = ray.data.read_parquet(storage.data_path(prepared / "catalogue"),
                                          columns=["product_id", "text"]) \
            .repartition(target_num_rows_per_block=cfg.batch_size * 2)
        storage.write_parquet(embed_dataset(catalogue, cfg), tmp / "vectors")
        seconds = time.perf_counter() - start
        ids, vectors = load_embeddings(tmp / "vectors")
        if len(ids) != n:
            raise FirstLightError(f"embedding wrote {len(ids)} vectors for {n} products; rerun `firstlight embed`")
        write_json(tmp / "manifest.json", {
            "stage": "embed", "inputs_key": key, "model": cfg.model, "prepared_dir": str(prepared.resolve()), "dim": int(vectors.shape[1]),
            "count": len(ids), "seconds": round(seconds, 1), "products_per_second": round(n / seconds, 1)})
    log.info("[embed] %d products in %.1fs (%.0f/s)", n, seconds, n / seconds)
    return out
