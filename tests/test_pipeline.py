"""The main job end to end on a real slice of Home Depot, and its data fallbacks."""

import functools
import http.server
import json
import threading

import pytest

from data_pipeline.download import download_wands
from firstlight.cli import main
from firstlight.pipeline import DemoConfig, run_demo
from model.runtime import EncoderRuntime


def test_demo_end_to_end_then_reuses_finished_stages(small_homedepot, tiny_model_dir, tmp_path, ray_session,
                                                     capsys):
    cfg = DemoConfig(dataset="homedepot", data_dir=str(small_homedepot), workdir=str(tmp_path),
                     model=str(tiny_model_dir), runtime=EncoderRuntime(product_max_length=32))
    results = run_demo(cfg)
    table = capsys.readouterr().out
    assert "| bm25 |" in table and "| dense |" in table and "| fusion |" in table
    saved = json.loads((tmp_path / "homedepot" / "eval" / "test.json").read_text())
    assert saved["queries"] == results["queries"] > 10
    for name in ("bm25", "dense", "fusion"):
        means = saved["systems"][name]["mean"]
        assert set(means) == {"ndcg@10", "recall@100", "mrr@10", "p@10", "judged@10", "ndcg@10_judged"}
        assert all(0.0 <= v <= 1.0 for v in means.values())
        assert len(saved["systems"][name]["per_query"]["ndcg@10"]) == saved["queries"]
    bm25 = saved["systems"]["bm25"]["mean"]
    assert bm25["ndcg@10"] > 0.2 and bm25["recall@100"] > 0.5  # real lexical signal on real queries
    # a random tiny encoder knows nothing; fusion with BM25 must not fall far below BM25 alone
    assert saved["systems"]["fusion"]["mean"]["recall@100"] >= saved["systems"]["dense"]["mean"]["recall@100"]

    # A second run (as after a crash in a later stage) reuses every finished stage.
    embeddings = tmp_path / "homedepot" / "embeddings" / "manifest.json"
    stamp = embeddings.stat().st_mtime_ns
    (tmp_path / "homedepot" / "eval" / "test.json").unlink()
    again = run_demo(cfg)
    assert embeddings.stat().st_mtime_ns == stamp
    assert again["systems"]["bm25"]["mean"] == pytest.approx(bm25)

    # Fusion weights tuned on val, then applied to test; tuning on the reported split is refused.
    work = tmp_path / "homedepot"
    flags = ["evaluate", "--prepared_dir", str(work / "data"), "--index_dir", str(work / "index"),
             "--runtime.query_max_length", "32", "--first_stage.fusion", "wsum", "--output", str(tmp_path / "tuned.json")]
    assert main([*flags, "--tune_fusion_on", "val"]) == 0
    tuned = json.loads((tmp_path / "tuned.json").read_text())
    weights = tuned["fusion"]["params"]["weights"]
    assert tuned["fusion"]["tuned_on"] == "val" and sum(weights) == pytest.approx(1.0) and len(weights) == 2
    assert tuned["systems"]["bm25"]["mean"] == pytest.approx(bm25)
    assert main([*flags, "--tune_fusion_on", "test"]) == 2
    assert "tune_fusion_on" in capsys.readouterr().err

    # A shop's own held-out file, its columns mapped, scored on the prepared catalogue with the reranker;
    # the same judgments as the test split give the same figures, and a TREC run lands beside them.
    from data_pipeline.prepare import load_split

    held_out = load_split(work / "data", "test").rename(columns={"query": "q", "product_id": "sku", "relevance": "grade"})
    held_out.to_csv(tmp_path / "held_out.csv", index=False)
    reranker = _tiny_reranker(tiny_model_dir, tmp_path / "reranker")
    out = tmp_path / "held_out.json"
    assert main(["evaluate", "--prepared_dir", str(work / "data"), "--index_dir", str(work / "index"), "--runtime.query_max_length",
                 "32", "--judgments", str(tmp_path / "held_out.csv"), "--query_column", "q", "--product_id_column",
                 "sku", "--relevance_column", "grade", "--systems", "bm25,fusion,rerank", "--rerank.model", str(reranker),
                 "--rerank.depth", "10", "--output", str(out)]) == 0
    mine = json.loads(out.read_text())
    assert mine["queries"] == saved["queries"] and mine["judgments"] == str(tmp_path / "held_out.csv")
    assert mine["systems"]["bm25"]["mean"] == pytest.approx(bm25)
    assert "| rerank |" in capsys.readouterr().out
    lines = (tmp_path / "held_out.rerank.trec").read_text().splitlines()
    qid, q0, pid, rank, score, system = lines[0].split()
    assert (qid, q0, rank, system) == ("0", "Q0", "1", "rerank") and float(score) > 0
    assert len({ln.split()[0] for ln in lines}) == saved["queries"]
    # the reranker reordered each query's top 10 and left the rest of the first stage as it was
    fusion = [ln.split()[2] for ln in (tmp_path / "held_out.fusion.trec").read_text().splitlines() if ln.startswith("0 ")]
    reranked = [ln.split()[2] for ln in lines if ln.startswith("0 ")]
    assert set(reranked[:10]) == set(fusion[:10]) and reranked[10:] == fusion[10:]
    assert main(["evaluate", "--prepared_dir", str(work / "data"), "--systems", "bm25", "--judgments",
                 str(tmp_path / "held_out.csv")]) == 2
    assert "'query'" in capsys.readouterr().err  # the unmapped column is named


def _tiny_reranker(tiny_model_dir, out):
    import torch
    from transformers import AutoTokenizer

    from model.reranker import export_reranker, new_reranker

    torch.manual_seed(0)
    return export_reranker(new_reranker(str(tiny_model_dir)), AutoTokenizer.from_pretrained(tiny_model_dir), out,
                           max_length=64)


def test_evaluate_cli_runs_bm25_alone(small_homedepot, tmp_path, ray_session, capsys):
    code = main(["prepare", "--dataset", "homedepot", "--data_dir", str(small_homedepot),
                 "--output_dir", str(tmp_path / "data")])
    assert code == 0
    code = main(["evaluate", "--prepared_dir", str(tmp_path / "data"), "--systems", "bm25", "--split", "val",
                 "--first_stage.spell_correct", "false"])
    out = capsys.readouterr().out
    assert code == 0 and "| bm25 |" in out and "| dense |" not in out
    plain = json.loads((tmp_path / "eval" / "val.json").read_text())
    assert plain["split"] == "val" and "spell_correct" not in plain

    # with spelling correction (the default, as served): real misspelt queries are corrected, results
    # stay keyed by what was typed
    code = main(["evaluate", "--prepared_dir", str(tmp_path / "data"), "--systems", "bm25", "--split", "val",
                 "--output", str(tmp_path / "spelled.json")])
    assert code == 0
    spelled = json.loads((tmp_path / "spelled.json").read_text())
    assert spelled["query_order"] == plain["query_order"]
    assert 0 < spelled["spell_correct"]["queries_changed"] < spelled["queries"] == plain["queries"]
    assert spelled["systems"]["bm25"]["mean"] != plain["systems"]["bm25"]["mean"]


def test_demo_without_data_or_network_says_where_to_put_data(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FIRSTLIGHT_HOMEDEPOT_DIR", str(tmp_path / "missing"))
    monkeypatch.setattr("data_pipeline.download.WANDS_BASE_URL", "http://127.0.0.1:9/")
    code = main(["demo", "--workdir", str(tmp_path / "work"), "--num_cpus", "2"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "could not download WANDS" in err and "FIRSTLIGHT_HOMEDEPOT_DIR" in err
    assert not (tmp_path / "work" / "downloads" / "wands").exists()  # nothing half-downloaded is left


def test_wands_download_fetches_all_three_files(wands_dir, tmp_path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(wands_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        folder = download_wands(tmp_path / "wands", base_url=f"http://127.0.0.1:{server.server_port}/")
    finally:
        server.shutdown()
    for name in ("product.csv", "query.csv", "label.csv"):
        assert (folder / name).read_bytes() == (wands_dir / name).read_bytes()


def test_evaluate_ranks_within_a_filter_and_scores_against_what_it_allows(small_homedepot, tmp_path, ray_session,
                                                                         capsys):
    import pandas as pd

    assert main(["prepare", "--dataset", "homedepot", "--data_dir", str(small_homedepot),
                 "--output_dir", str(tmp_path / "data")]) == 0
    catalogue = pd.read_parquet(tmp_path / "data" / "catalogue")
    brand = catalogue["brand"].value_counts().index[0]
    expr = json.dumps({"not": {"field": "brand", "eq": brand}})
    assert main(["evaluate", "--prepared_dir", str(tmp_path / "data"), "--systems", "bm25", "--split", "val",
                 "--filter", expr, "--output", str(tmp_path / "filtered.json")]) == 0
    results = json.loads((tmp_path / "filtered.json").read_text())
    assert results["filter"]["read_as"] == f"not (brand = {brand})"
    assert results["filter"]["products"] == int((catalogue["brand"] != brand).sum())
    run = (tmp_path / "filtered.bm25.trec").read_text().split("\n")
    ranked = {line.split()[2] for line in run if line}
    assert ranked and not ranked & set(catalogue.loc[catalogue["brand"] == brand, "product_id"])
    capsys.readouterr()
    assert main(["evaluate", "--prepared_dir", str(tmp_path / "data"), "--systems", "bm25",
                 "--filter", '{"field": "colour", "eq": "red"}']) == 2
    assert "colour" in capsys.readouterr().err
