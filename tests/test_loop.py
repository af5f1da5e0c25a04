"""`firstlight loop` against a real server: events -> train -> index -> gate -> canary -> decision, a
crash in the middle resumed where it stopped, and the canary's decision rule."""

from __future__ import annotations

import json
import threading

import pytest
import requests

from benchmarks.events.clicks import ClickModel, run_http, training_queries
from data_pipeline.embed import Actors
from firstlight import loop
from firstlight.loop import LoopConfig, judge, run_loop
from tests.serving import TOKEN, artifacts, post, served, small_app  # noqa: F401 - the shared fixture


def arms(canary_ctr, control_ctr, lists=4000, var=1.0):
    return {"canary": {"lists": lists, "ctr": canary_ctr, "ctr_var": var},
            "control": {"lists": 4 * lists, "ctr": control_ctr, "ctr_var": var}}


def test_the_canary_decision_follows_the_per_arm_figures():
    assert judge(arms(1.10, 1.00), 2000, 0.0)["outcome"] == "promoted"
    assert judge(arms(0.90, 1.00), 2000, 0.0)["outcome"] == "rolled back"
    assert judge(arms(1.01, 1.00), 2000, 0.0)["outcome"] == "rolled back"  # not shown to be no worse
    assert judge(arms(1.01, 1.00), 2000, 0.05)["outcome"] == "promoted"  # within the margin
    assert judge(arms(1.5, 1.0, lists=100), 2000, 0.0)["reason"] == "too few canary lists"


def test_the_loop_refuses_settings_it_cannot_run(tmp_path, monkeypatch):
    from common.errors import ConfigError

    monkeypatch.delenv("FIRSTLIGHT_ADMIN_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="events"):
        LoopConfig(events=str(tmp_path)).validate()
    (tmp_path / "impressions").mkdir()
    (tmp_path / "data" / "catalogue").mkdir(parents=True)
    with pytest.raises(ConfigError, match="admin_token"):
        LoopConfig(events=str(tmp_path), prepared_dir=str(tmp_path / "data")).validate()
    with pytest.raises(ConfigError, match="canary_share"):
        LoopConfig(events=str(tmp_path), prepared_dir=str(tmp_path / "data"), canary_share=0.9).validate()


@pytest.fixture(scope="module")
def shop(artifacts):  # noqa: F811
    root, _ = artifacts
    cfg = small_app({"index_dir": str(root / "index"), "state_dir": str(root / "loop_state"),
                     "admin_token_file": str(root / "token"), "events": {"swap_share": 0.2, "flush_ms": 5}})
    with served(cfg) as url:
        yield url, cfg


@pytest.mark.serving
@pytest.mark.training
def test_a_round_trains_gates_canaries_and_decides_resuming_after_a_crash(shop, artifacts, tmp_path,  # noqa: F811
                                                                          monkeypatch):
    url, serve_cfg = shop
    root, _ = artifacts
    queries, grades = training_queries(root / "data")
    run_http(url, queries, grades, 600, seed=3)  # day one's traffic
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("optim: {batch_size: 16, max_steps: 6, lr: 1.0e-4}\ndist: {num_workers: 1, cpus_per_worker: 1}\n"
                      "checkpoints: {every: 3, val_queries: 20, val_products: 200}\nhard_negatives: judged\n")
    cfg = LoopConfig(server=url, events=serve_cfg.resolved_events_dir(), prepared_dir=str(root / "data"),
                     output_dir=str(root / "loop_rounds"),  # below the server's reload roots
                     admin_token_file=str(root / "token"), train_recipe=str(recipe),
                     gate_min_gain=-1.0, canary_share=0.5, min_impressions=30, margin=1.0, poll_s=0.5,
                     actors=Actors(cpus=0.25))  # the server beside it holds part of the 2 CPUs

    def crash(*args):
        raise RuntimeError("the job's node was lost")

    monkeypatch.setattr(loop, "_canary", crash)
    with pytest.raises(RuntimeError, match="node was lost"):
        run_loop(cfg)
    monkeypatch.undo()
    round_dir = next((root / "loop_rounds").glob("round-*"))
    trained = (round_dir / "train" / "model" / "firstlight.json").stat().st_mtime_ns
    assert json.loads((round_dir / "events" / "manifest.json").read_text())["records"]["impressions"] >= 600
    assert (round_dir / "gate.json").exists() and (root / "loop_rounds" / "current.json").exists()

    stop = threading.Event()

    def shoppers():  # the canary's traffic: sessions split between the arms by the server
        seed = 100
        while not stop.is_set():
            run_http(url, queries, grades, 20, seed=seed, model=ClickModel())
            seed += 1

    traffic = threading.Thread(target=shoppers)
    traffic.start()
    try:
        result = run_loop(cfg)  # resumes: the same round, training not redone
    finally:
        stop.set()
        traffic.join()
    assert (round_dir / "train" / "model" / "firstlight.json").stat().st_mtime_ns == trained
    assert result["outcome"] == "promoted"  # margin 1.0: any canary that served its lists
    decision = json.loads((round_dir / "decision.json").read_text())
    assert decision["arms"]["canary"]["lists"] >= 30 and decision["arms"]["control"]["lists"] > 0
    stats = requests.get(url + "/v1/stats", timeout=30).json()
    assert stats["canary"] is None and stats["version"]["index"].endswith(f"{round_dir.name}/index")
    assert not (root / "loop_rounds" / "current.json").exists()
    assert post(url, "/v1/recommend", {"text": "cordless drill", "k": 3}).ok
