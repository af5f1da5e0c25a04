"""The product index: FAISS inner-product search over unit vectors (= cosine similarity).

- ``flat``: exact search.
- ``ivf``: inverted lists (``nlist`` clusters, ``nprobe`` searched); for millions of products.
- ``ivfpq``: inverted lists of product-quantised codes (``pq_m`` bytes a product instead of 4 x dim):
  for catalogues whose float vectors would not fit in memory, at a cost in recall.
- ``hnsw``: a graph index (``hnsw_m`` links, ``ef_search``); fast queries, slow to build, memory-hungry.
- ``auto`` (default): flat up to ``FLAT_UP_TO`` products, ivf beyond, with ``nlist`` ~ 4 x sqrt(products)
  unless set. The thresholds come from the scale curves in benchmarks/RESULTS.md ("Index scale").

The index moves to the GPU when faiss was built with GPU support and a GPU is visible (``use_gpu``
= auto), and is always saved from CPU memory. On disk: ``index.faiss``, ``ids.json`` (row -> product
id) and ``manifest.json`` (model, dimension, count, kind).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from common import storage
from common.config import check_choice, check_range
from common.errors import ConfigError, FirstLightError
from common.hardware import GpuChoice, check_use_gpu, gpu_choice
from common.manifest import atomic_folder, read_manifest, write_json
from data_pipeline.vectors import load_embeddings

log = logging.getLogger(__name__)

KINDS = ("auto", "flat", "ivf", "ivfpq", "hnsw")
# auto picks exact search up to this many products: on 2 cores a flat scan answers one query in 8 ms at
# 54k products and 152 ms at 1M; IVF answers in under 1 ms there, finding 0.92 of the exact top 100.
FLAT_UP_TO = 200_000
# k-means on at most this many points a cluster (FAISS asks for 39 to 256): training costs points x
# clusters x iterations, minutes on 2 cores at millions of products
TRAIN_PER_CLUSTER = 64


def resolved_kind(kind: str, n: int) -> str:
    if kind != "auto":
        return kind
    return "flat" if n <= FLAT_UP_TO else "ivf"


def auto_nlist(n: int) -> int:
    """~4 sqrt(n) clusters, a power of two (FAISS's guideline for IVF is 4 to 16 sqrt(n)), at most 4096:
    k-means training and assigning every product cost products x clusters, which at 10M products and
    16k clusters is most of an hour on 2 cores, while 4096 clusters x nprobe 32 still scan under 1%."""
    return min(4096, int(2 ** round(np.log2(max(1.0, 4 * np.sqrt(n))))))


def new_faiss_index(kind: str, dim: int, n: int, cfg: IndexConfig):
    """An empty FAISS index of a resolved ``kind`` for ``n`` vectors, and its cluster count (None when
    it has no clusters). IVF kinds still need ``train``: see ``training_sample``."""
    faiss = _faiss()
    if kind == "flat":
        return faiss.IndexFlatIP(dim), None
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = cfg.ef_search
        return index, None
    wanted = cfg.nlist or auto_nlist(n)
    nlist = max(1, min(wanted, n // 39))  # FAISS wants ~39 training points per cluster
    if nlist != wanted:
        log.info("[index] %s: %d products support %d clusters, not %d", kind, n, nlist, wanted)
    if kind == "ivf":
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    else:
        if dim % cfg.pq_m:
            raise ConfigError("pq_m", f"{cfg.pq_m} does not divide the vectors' {dim} dimensions",
                              "use a divisor of the dimension (384: 24, 32, 48, 96)")
        index = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, nlist, cfg.pq_m, 8, faiss.METRIC_INNER_PRODUCT)
    index.nprobe = min(cfg.nprobe, nlist)
    return index, nlist


def training_sample(vectors: np.ndarray, nlist: int) -> np.ndarray:
    """At most TRAIN_PER_CLUSTER vectors a cluster, drawn with a fixed seed."""
    cap = TRAIN_PER_CLUSTER * nlist
    return vectors if len(vectors) <= cap else vectors[np.random.default_rng(0).choice(len(vectors), cap, replace=False)]


def _faiss():
    try:
        import faiss
    except ImportError:
        raise FirstLightError("FAISS is not installed. Fix: pip install 'firstlight[cpu]' "
                              "(or 'firstlight[gpu]' on a CUDA machine)") from None
    return faiss


def gpu_count() -> int:
    faiss = _faiss()
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


@dataclass
class IndexConfig:
    embeddings_dir: str | None = field(default=None, metadata={"help": "output of `embed`"})
    output_dir: str | None = field(default=None, metadata={"help": "default: EMBEDDINGS/../index"})
    kind: str = field(default="auto", metadata={
        "help": "auto (flat up to 200k products, ivf beyond), flat (exact), ivf, ivfpq or hnsw"})
    nlist: int = field(default=0, metadata={"help": "ivf/ivfpq: clusters; 0 = ~4 sqrt(products) (capped at products/39)"})
    nprobe: int = field(default=32, metadata={"help": "ivf/ivfpq: clusters searched per query"})
    pq_m: int = field(default=48, metadata={"help": "ivfpq: bytes per product (must divide the dimension)"})
    hnsw_m: int = field(default=32, metadata={"help": "hnsw: links per node"})
    ef_search: int = field(default=128, metadata={"help": "hnsw: search breadth"})
    use_gpu: GpuChoice = field(default="auto", metadata={"help": "auto, yes or no"})

    def __post_init__(self):
        self.use_gpu = gpu_choice(self.use_gpu)

    def validate(self) -> None:
        check_choice("kind", self.kind, KINDS)
        check_use_gpu("use_gpu", self.use_gpu)
        check_range("nlist", self.nlist, 0)
        check_range("pq_m", self.pq_m, 1, 1024)
        check_range("nprobe", self.nprobe, 1)
        check_range("hnsw_m", self.hnsw_m, 2, 512)
        check_range("ef_search", self.ef_search, 1)

    def resolved_output_dir(self) -> Path:
        return Path(self.output_dir) if self.output_dir else Path(self.embeddings_dir).parent / "index"


class ProductIndex:
    """Product ids + a FAISS index over their unit vectors."""

    def __init__(self, index, ids: list[str], manifest: dict):
        self.index, self.ids, self.manifest = index, list(ids), manifest
        self._cpu_copy = None  # set when the index moves to a GPU: selector searches run on it
        self._ids = np.asarray(self.ids, dtype=object)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @property
    def on_gpu(self) -> bool:
        return bool(self.manifest.get("on_gpu"))

    @classmethod
    def build(cls, ids, vectors: np.ndarray, cfg: IndexConfig | None = None, model: str = "") -> "ProductIndex":
        cfg = cfg or IndexConfig()
        cfg.validate()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(ids) != len(vectors):
            raise FirstLightError(f"index needs one vector per id: got {len(ids)} ids and {vectors.shape} vectors")
        n, dim = vectors.shape
        start = time.perf_counter()
        kind = resolved_kind(cfg.kind, n)
        index, nlist = new_faiss_index(kind, dim, n, cfg)
        if nlist:
            index.train(training_sample(vectors, nlist))
        index.add(vectors)
        manifest = {"kind": kind, "dim": dim, "count": n, "model": model, "config": asdict(cfg),
                    "build_seconds": round(time.perf_counter() - start, 3)}
        built = cls(index, ids, manifest)
        return built.to_gpu_if_wanted(cfg.use_gpu)

    def to_gpu_if_wanted(self, use_gpu: str = "auto") -> "ProductIndex":
        """Move a flat or IVF index to GPU 0 when asked (yes) or possible (auto)."""
        gpus = gpu_count()
        if use_gpu == "yes" and gpus == 0:
            raise ConfigError("use_gpu", "yes, but faiss sees no GPU (faiss-cpu installed, or no CUDA device)",
                              "install firstlight[gpu] on a CUDA machine, or set --use_gpu auto/no")
        if use_gpu == "no" or gpus == 0 or self.manifest["kind"] == "hnsw":
            self.manifest["on_gpu"] = False
            return self
        faiss = _faiss()
        self._gpu_resources = faiss.StandardGpuResources()
        self._cpu_copy = self.index  # filtered searches that must honour a selector run on it
        self.index = faiss.index_cpu_to_gpu(self._gpu_resources, 0, self.index)
        self.manifest["on_gpu"] = True
        log.info("[index] %s index moved to GPU 0", self.manifest["kind"])
        return self

    def vectors(self, rows: list[int]) -> np.ndarray:
        """The stored vectors of ``rows`` (PQ indexes give their approximation): what a clicked
        product looks like to the index, for session personalisation."""
        faiss = _faiss()
        try:
            return np.stack([self.index.reconstruct(int(r)) for r in rows]).astype(np.float32)
        except RuntimeError:  # an IVF index needs its direct map once to look rows up
            faiss.extract_index_ivf(self.index).make_direct_map()
            return np.stack([self.index.reconstruct(int(r)) for r in rows]).astype(np.float32)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k per query row: (scores float32 [q, k], product ids object [q, k]); k is capped at
        the index size."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if queries.shape[1] != self.dim:
            raise FirstLightError(f"query vectors have {queries.shape[1]} dims, the index {self.dim}: "
                                  f"encode queries with the model the index was built with ({self.manifest.get('model')})")
        k = min(int(k), len(self))
        scores, rows = self.index.search(queries, k)
        # FAISS pads with row -1 when an approximate index finds fewer than k products.
        ids = np.where(rows >= 0, self._ids[np.clip(rows, 0, None)], None)
        return scores, ids

    # -- search within a filter -----------------------------------------------------------------
    def search_within(self, queries: np.ndarray, k: int, allowed: np.ndarray, exact_below: float = 0.05,
                      plan: str = "auto", widen: float = 1.0) -> tuple[np.ndarray, np.ndarray, str]:
        """Top-k per query among the rows where ``allowed`` (one bool per row) is True:
        (scores, ids, the path taken). Rows past the allowed count are padded (-inf, None).

        The path, by the share ``s`` of rows allowed (``plan`` "auto"; the others force one, for
        benchmarks and tests):
        - ``exact`` when ``s <= exact_below``: every allowed row scored (a bitmap selector over a
          flat scan; IVF probing every list; HNSW's flat storage), so nothing is missed however
          restrictive the filter;
        - ``ann`` above it: the index's own filtered search, with IVF's nprobe and HNSW's efSearch
          raised by ``widen`` / s (1 / s visits about as many allowed candidates as an unfiltered
          search; more finds more of the exact filtered top-k);
          a query it answers short of ``min(k, allowed)`` is answered again by ``exact``;
        - ``post`` on a GPU index (FAISS's GPU indexes ignore selectors, silently): over-fetch
          ``2k / s`` unfiltered and keep the allowed; a short query is answered by ``exact`` on the
          CPU copy of the index;
        - ``unplanned``: the index's filtered search with its configured breadth and no fallback
          (what the planner is measured against).
        """
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        allowed = np.asarray(allowed, dtype=bool)
        count = int(allowed.sum())
        k = min(int(k), len(self))
        want = min(k, count)
        if want == 0:
            return np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), None, object), "none"
        share = count / len(self)
        if plan == "auto":
            plan = "post" if self.on_gpu else "exact" if share <= exact_below else "ann"
        selector, bitmap = self._selector(allowed)  # noqa: F841 - the bitmap must outlive the searches
        if plan == "post":
            scores, rows = self._post_filtered(queries, k, allowed, share)
        else:
            scores, rows = self._filtered(queries, k, selector, share / widen if plan != "unplanned" else 1.0,
                                          exhaustive=plan == "exact")
        if plan in ("ann", "post"):
            short = np.flatnonzero((rows[:, :want] < 0).any(axis=1))
            if len(short):
                scores[short], rows[short] = self._filtered(queries[short], k, selector, 1.0, exhaustive=True)
                plan = f"{plan}+exact"
        ids = np.where(rows >= 0, self._ids[np.clip(rows, 0, None)], None)
        return scores, ids, plan

    @staticmethod
    def _selector(allowed: np.ndarray):
        faiss = _faiss()
        bitmap = np.packbits(allowed, bitorder="little")
        return faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bitmap)), bitmap

    def _filtered(self, queries, k, selector, scale: float, exhaustive: bool):
        """The index's search through ``selector``: every list / the flat storage when
        ``exhaustive``, else at its configured breadth divided by ``scale``."""
        faiss = _faiss()
        index = self.index if self._cpu_copy is None else self._cpu_copy
        kind = self.manifest.get("kind")
        if kind in ("ivf", "ivfpq"):
            ivf = faiss.extract_index_ivf(index)
            nprobe = ivf.nlist if exhaustive else min(ivf.nlist, int(np.ceil(ivf.nprobe / scale)))
            params = faiss.SearchParametersIVF(sel=selector, nprobe=nprobe)
        elif kind == "hnsw" and exhaustive:
            index = faiss.downcast_index(index.storage)  # the flat vectors under the graph
            params = faiss.SearchParameters(sel=selector)
        elif kind == "hnsw":
            ef = index.hnsw.efSearch
            params = faiss.SearchParametersHNSW(sel=selector, efSearch=int(min(4096, max(k, np.ceil(ef / scale)))))
        else:
            params = faiss.SearchParameters(sel=selector)
        return index.search(queries, k, params=params)

    def _post_filtered(self, queries, k, allowed: np.ndarray, share: float):
        fetch = min(len(self), int(np.ceil(2 * k / share)))
        scores, rows = self.index.search(queries, fetch)
        keep = (rows >= 0) & allowed[np.clip(rows, 0, None)]
        out_scores = np.full((len(queries), k), -np.inf, np.float32)
        out_rows = np.full((len(queries), k), -1, np.int64)
        for q in range(len(queries)):
            hits = np.flatnonzero(keep[q])[:k]
            out_scores[q, :len(hits)], out_rows[q, :len(hits)] = scores[q, hits], rows[q, hits]
        return out_scores, out_rows

    def save(self, folder: Path) -> Path:
        faiss = _faiss()
        cpu_index = faiss.index_gpu_to_cpu(self.index) if self.on_gpu else self.index
        with atomic_folder(Path(folder)) as tmp:
            faiss.write_index(cpu_index, str(tmp / "index.faiss"))
            with open(tmp / "ids.json", "w") as fh:
                json.dump(self.ids, fh)
            write_json(tmp / "manifest.json", {**self.manifest, "on_gpu": False})
        return Path(folder)

    @classmethod
    def load(cls, folder: Path, use_gpu: str = "auto") -> "ProductIndex":
        faiss = _faiss()
        folder = Path(folder)
        manifest = read_manifest(folder)
        if manifest is None or not (folder / "index.faiss").exists():
            raise FirstLightError(f"{folder} holds no saved index. Fix: run `firstlight index` first")
        index = faiss.read_index(str(folder / "index.faiss"))
        with open(folder / "ids.json") as fh:
            ids = json.load(fh)
        if len(ids) != index.ntotal:
            raise FirstLightError(f"{folder}: ids.json has {len(ids)} ids for {index.ntotal} vectors; rebuild the index")
        return cls(index, ids, manifest).to_gpu_if_wanted(use_gpu)


def run_index(cfg: IndexConfig) -> Path:
    """Build the index from an embeddings folder and save it; return the index folder."""
    if storage.uses_uri(cfg, ("embeddings_dir", "output_dir")):
        return storage.run_on_mirrors(run_index, cfg, inputs=("embeddings_dir",), outputs=("output_dir",))
    cfg.validate()
    if not cfg.embeddings_dir:
        raise FirstLightError("index needs embeddings. Fix: pass --embeddings_dir (the output of embed)")
    source = read_manifest(Path(cfg.embeddings_dir))
    if source is None:
        raise FirstLightError(f"{cfg.embeddings_dir} holds no embeddings. Fix: run `firstlight embed` first")
    out = cfg.resolved_output_dir()
    existing = read_manifest(out)
    if existing and existing.get("source") == source.get("inputs_key") and existing.get("config") == json.loads(
            json.dumps(asdict(cfg))):
        log.info("[index] %s is up to date; reusing it", out)
        return out
    ids, vectors = load_embeddings(Path(cfg.embeddings_dir) / "vectors")
    index = ProductIndex.build(ids, vectors, cfg, model=source.get("model", ""))
    index.manifest["source"] = source.get("inputs_key")
    # the catalogue the vectors came from: the server finds titles there without being told
    index.manifest["prepared_dir"] = source.get("prepared_dir")
    index.save(out)
    log.info("[index] %s index of %d x %d built in %.2fs -> %s", cfg.kind, len(ids), vectors.shape[1],
             index.manifest["build_seconds"], out)
    return out
