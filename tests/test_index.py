"""The FAISS product index: exact by default, IVF/HNSW by config, saved and loaded unchanged."""

import numpy as np
import pytest

from common.errors import ConfigError, FirstLightError
from data_pipeline.index import IndexConfig, ProductIndex


@pytest.fixture(scope="module")
def catalogue():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(2000, 48)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"sku-{i}" for i in range(len(vectors))]
    queries = vectors[:20] + 0.05 * rng.normal(size=(20, 48)).astype(np.float32)
    return ids, vectors, queries


def test_flat_index_is_exact_cosine_search(catalogue):
    ids, vectors, queries = catalogue
    index = ProductIndex.build(ids, vectors, IndexConfig(), model="m")
    scores, found = index.search(queries, 10)
    exact = queries @ vectors.T
    expected = np.argsort(-exact, axis=1)[:, :10]
    assert found.tolist() == [[ids[j] for j in row] for row in expected]
    np.testing.assert_allclose(scores, np.take_along_axis(exact, expected, axis=1), rtol=1e-5)
    assert found[:, 0].tolist() == ids[:20]  # each noisy copy finds its product first


@pytest.mark.parametrize("kind", ["flat", "ivf", "ivfpq", "hnsw"])
def test_saved_and_loaded_index_gives_the_same_top_k(catalogue, tmp_path, kind):
    ids, vectors, queries = catalogue
    index = ProductIndex.build(ids, vectors, IndexConfig(kind=kind, nlist=16, nprobe=4, pq_m=12), model="m")
    before = index.search(queries, 25)
    index.save(tmp_path / kind)
    loaded = ProductIndex.load(tmp_path / kind)
    after = loaded.search(queries, 25)
    assert after[1].tolist() == before[1].tolist()
    np.testing.assert_allclose(after[0], before[0])
    assert loaded.manifest["kind"] == kind and loaded.manifest["count"] == 2000
    assert loaded.manifest["dim"] == 48 and loaded.manifest["model"] == "m"


def test_approximate_indexes_find_most_exact_neighbours(catalogue):
    ids, vectors, queries = catalogue
    exact = ProductIndex.build(ids, vectors).search(queries, 10)[1]
    for cfg, floor in ((IndexConfig(kind="ivf", nlist=16, nprobe=8), 0.8), (IndexConfig(kind="hnsw"), 0.8),
                       (IndexConfig(kind="ivfpq", nlist=16, nprobe=8, pq_m=24), 0.5)):
        approx = ProductIndex.build(ids, vectors, cfg).search(queries, 10)[1]
        recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
        assert recall > floor, cfg.kind


def test_auto_kind_is_exact_for_small_catalogues_and_ivf_for_large(catalogue, monkeypatch):
    from data_pipeline import index as index_module

    ids, vectors, _ = catalogue
    assert ProductIndex.build(ids, vectors).manifest["kind"] == "flat"
    monkeypatch.setattr(index_module, "FLAT_UP_TO", 1000)
    built = ProductIndex.build(ids, vectors)
    assert built.manifest["kind"] == "ivf"
    assert built.index.nlist == 2000 // 39  # ~4 sqrt(2000) = 128 clusters, capped at 39 points each
    assert index_module.auto_nlist(1_000_000) == 4096 and index_module.auto_nlist(10_000_000) == 4096 and index_module.auto_nlist(54_667) == 1024


def test_pq_bytes_must_divide_the_dimension(catalogue):
    ids, vectors, _ = catalogue
    with pytest.raises(ConfigError, match="'pq_m'.*48 dimensions"):
        ProductIndex.build(ids, vectors, IndexConfig(kind="ivfpq", nlist=16, pq_m=10))


def test_k_larger_than_catalogue_and_wrong_dimension(catalogue):
    ids, vectors, _ = catalogue
    small = ProductIndex.build(ids[:5], vectors[:5])
    assert small.search(vectors[:1], 100)[1].shape == (1, 5)
    with pytest.raises(FirstLightError, match="encode queries with the model"):
        small.search(np.ones((1, 7), dtype=np.float32), 3)


def test_gpu_request_without_gpu_is_a_clear_error(catalogue):
    ids, vectors, _ = catalogue
    with pytest.raises(ConfigError, match="use_gpu"):
        ProductIndex.build(ids, vectors, IndexConfig(use_gpu="yes"))
    assert ProductIndex.build(ids, vectors, IndexConfig(use_gpu="auto")).on_gpu is False


def test_bad_index_config_is_named():
    with pytest.raises(ConfigError, match="'kind'"):
        IndexConfig(kind="lsh").validate()
