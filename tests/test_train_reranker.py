"""Training the cross-encoder reranker through Ray Train + DeepSpeed (the bi-encoder's engine) on CPU,
with a tiny model, on lists mined from a real first stage over a real Home Depot slice."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from data_pipeline.index import ProductIndex
from data_pipeline.prepare import PrepareConfig, load_catalogue, load_split, run_prepare
from firstlight.cli import main
from tests.test_train import config_of
from train.rerank_config import RerankerConfig

pytestmark = pytest.mark.training  # a slow kind: the quick tier (-m 'not slow') leaves these out


@pytest.fixture(scope="module")
def first_stage(small_homedepot, tiny_model_dir, tmp_path_factory, ray_session):
    """prepare + an index of the tiny encoder: the first stage the lists are mined from."""
    from model.encoder import TextEncoder

    root = tmp_path_factory.mktemp("rerank_train")
    prepared = run_prepare(PrepareConfig(dataset="homedepot", data_dir=str(small_homedepot),
                                         output_dir=str(root / "data")))
    catalogue = load_catalogue(prepared)
    vectors = TextEncoder.load(str(tiny_model_dir), max_length=32).encode(catalogue["text"].tolist())
    ProductIndex.build(catalogue["product_id"].tolist(), vectors, model=str(tiny_model_dir)).save(root / "index")
    return prepared, root / "index"


def tiny_reranker_config(first_stage, tiny_model_dir, out, **overrides) -> RerankerConfig:
    prepared, index = first_stage
    settings = dict(prepared_dir=str(prepared), first_stage_index_dir=str(index), output_dir=str(out),
                    model=str(tiny_model_dir), num_workers=2, cpus_per_worker=0.5, zero_stage=2, grad_accum=2,
                    batch_size=4, group_size=4, mined_per_group=1, max_steps=4, checkpoint_every=2, val_queries=10,
                    rerank_depth=10, lr=1e-3, warmup_ratio=0.0, precision="fp32")
    settings.update(overrides)
    return config_of(RerankerConfig, **settings)


def test_lists_keep_judged_labels_and_add_unjudged_first_stage_products_as_irrelevant(first_stage, tiny_model_dir):
    from ranking.offline import OfflineRanker
    from train.rerank_lists import mine_lists

    prepared, index = first_stage
    cfg = tiny_reranker_config(first_stage, tiny_model_dir, "unused", group_size=6, mined_per_group=2,
                               mine_skip=2, mine_depth=20)
    ranker = OfflineRanker(str(prepared), str(index))
    lists = mine_lists(cfg, ranker, "train")
    judged = load_split(prepared, "train").groupby(["query", "product_id"])["relevance"].mean()
    text_of = ranker.hybrid.texts
    assert len(lists) > 50 and lists["products"].map(len).max() == 6
    checked = 0
    for query, products, labels in lists.head(40).itertuples(index=False):
        assert len(products) == len(labels) and 1.0 in labels  # at least one mined product per group
        graded = judged.loc[query] if query in judged.index.get_level_values(0) else None
        if graded is not None:  # (spelling correction may have changed the query's text)
            judged_texts = {text_of[p]: r for p, r in graded.items()}
            for text, label in zip(products, labels):
                if label != 1.0:
                    assert judged_texts[text] == pytest.approx(label)
            checked += 1
    assert checked > 20


def test_two_worker_zero2_run_recovers_from_a_failure_and_exports_a_cross_encoder(first_stage, tiny_model_dir,
                                                                                    tmp_path):
    import torch
    from sentence_transformers import CrossEncoder

    from model.reranker import Reranker
    from train.driver import run_train
    from train.progress import read_history

    cfg = tiny_reranker_config(first_stage, tiny_model_dir, tmp_path, fail_at_step=3, max_failures=1)
    model_dir = Path(run_train(cfg))
    assert (tmp_path / ".failed_once").exists() and (tmp_path / "resumed_from.txt").read_text().strip() == "2"
    history = read_history(tmp_path)
    assert history["step"].iloc[-1] == 4 and np.isfinite(history["loss"]).all()
    validated = history["val_ndcg@10"].dropna()
    assert len(validated) >= 1 and validated.between(0.0, 1.0).all()
    saved = json.loads((model_dir / "firstlight.json").read_text())
    assert saved["kind"] == "reranker" and saved["loss"] == "listnet" and saved["step"] in (2, 4)
    shards = list((tmp_path / "run").glob("checkpoint_*/state/*zero_pp_rank_1_*optim_states.pt"))
    assert shards  # both ranks' ZeRO-2 shards are in the checkpoint
    pairs = [("cordless drill", "DEWALT 20-Volt MAX Cordless Drill Kit"), ("paint", "Husky Ratchet Set")]
    ours = Reranker.load(str(model_dir), device="cpu", backend="fp32").score_pairs(*map(list, zip(*pairs)))
    theirs = CrossEncoder(str(model_dir), device="cpu").predict(pairs, activation_fn=torch.nn.Identity())
    assert np.allclose(ours, theirs, atol=1e-5)


def test_reranker_cli_refuses_a_missing_first_stage_index(first_stage, tmp_path, capsys):
    prepared, _ = first_stage
    code = main(["train-reranker", "--prepared_dir", str(prepared), "--first_stage_index_dir", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert code == 2 and "'first_stage_index_dir'" in err and "firstlight index" in err and "Traceback" not in err


def test_the_reranker_trains_on_logged_clicks_with_no_judgments(first_stage, tiny_model_dir, tmp_path):
    import shutil

    from benchmarks.events.clicks import run_in_process, training_queries
    from train.driver import run_train

    prepared, index = first_stage
    queries, grades = training_queries(prepared)
    ids = sorted(load_catalogue(prepared)["product_id"])
    rankings = {q: ([p for p in grades[q] if p in set(ids)] + ids)[:10] for q in queries}
    run_in_process(rankings, grades, 3000, tmp_path / "log", seed=0, swap_share=0.1)
    catalogue_only = tmp_path / "data"  # the catalogue alone: a run that reads judgments fails
    shutil.copytree(Path(prepared) / "catalogue", catalogue_only / "catalogue")
    shutil.copy(Path(prepared) / "manifest.json", catalogue_only / "manifest.json")
    cfg = tiny_reranker_config((catalogue_only, index), tiny_model_dir, tmp_path / "run", events=str(tmp_path / "log"),
                               num_workers=1, cpus_per_worker=1, grad_accum=1)
    model_dir = Path(run_train(cfg))
    saved = json.loads((model_dir / "firstlight.json").read_text())
    assert saved["kind"] == "reranker" and saved["step"] in (2, 4)
    assert not (catalogue_only / "judgments").exists()
