"""Constraints read from shoppers' words (ranking/constraints.py), measured on the labelled set in
benchmarks/constraint_set/ (its README says how it was written):

1. **Reader accuracy**: precision and recall of the extracted constraints against the labels, a
   constraint counting as right when field, operator and value all match; every miss listed.
2. **Ranking with the reader on vs off**, on the set's queries that have judged products: nDCG@10 on
   judgments where the stated hard constraints decide what is right (docs in the set's README), and
   the share of the top 10 that breaks a stated hard constraint, over queries where at least 10
   products meet them. Three ways: off; on; on with the constraint's words removed from the text the
   encoder and BM25 see. The soft boost is swept on zh-demo.
3. **Home Depot test split** (served default: fine-tuned index, hybrid, reranker): reader on vs off,
   on the queries where it reads nothing (identical rankings expected: counted) and where it reads
   something; and with brands as boosts instead of filters (``hard_fields`` empty).
4. **Reader latency**: p50 / p99 per query (reading + planning), over every query above.

    python benchmarks/quality/bench_constraints.py      # after `firstlight demo` for both datasets
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.report import update_section  # noqa: E402
from common.paths import default_workdir  # noqa: E402
from data_pipeline.prepare import catalogue_schema, load_split  # noqa: E402
from evaluation.metrics import evaluate_run, judged_from_frame  # noqa: E402
from ranking.constraint_plan import ConstraintPlan, boosted, plan, without_excluded  # noqa: E402
from ranking.constraints import Constraint, ConstraintReader, ConstraintReading  # noqa: E402
from ranking.filters import matches, parse_filter  # noqa: E402
from ranking.hybrid import FirstStage, HybridIndex  # noqa: E402
from ranking.offline import OfflineRanker  # noqa: E402
from ranking.rerank import RerankStage, rerank  # noqa: E402
from ranking.tokens import LexicalTokenizer  # noqa: E402

SET = Path(__file__).resolve().parents[1] / "constraint_set"
ZH_JUDGMENTS = Path(__file__).resolve().parents[2] / "data_pipeline" / "datasets" / "zh-demo" / "judgments.csv"
BOOSTS = (0, 2, 5, 10, 20)
K = 10


def load_set(name: str) -> list[dict]:
    return [json.loads(line) for line in (SET / f"{name}.jsonl").read_text().splitlines() if line.strip()]


def label_key(triple) -> tuple:
    field, op, value = triple
    if isinstance(value, list):
        value = tuple(float(v) for v in value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        value = float(value)
    elif isinstance(value, str):
        value = value.lower()
    return field, op, value


def accuracy(read: dict[str, list[Constraint]], items: list[dict]) -> dict:
    tp = fp = fn = 0
    misses = []
    for item in items:
        got = {c.key() for c in read[item["query"]]}
        want = {label_key(t) for t in item["constraints"]}
        tp += len(got & want)
        fp += len(got - want)
        fn += len(want - got)
        for kind, keys in (("extra", got - want), ("missed", want - got)):
            misses.extend({"query": item["query"], "kind": kind, "constraint": list(k)} for k in sorted(keys, key=str))
    return {"precision": tp / max(tp + fp, 1), "recall": tp / max(tp + fn, 1), "tp": tp, "fp": fp, "fn": fn,
            "misses": misses}


def stated(item: dict, reader: ConstraintReader, settings: ConstraintReading) -> list[Constraint]:
    """The labelled constraints as Constraints, their catalogue values found in the reader's vocabulary."""
    out = []
    for field, op, value in item["constraints"]:
        values = (value,)
        if isinstance(value, str) and reader.vocabulary is not None:
            terms = [t for t in (*reader.vocabulary.words.values(), *reader.vocabulary.chars.values())
                     if t.field == field and t.name.lower() == value.lower()]
            values = terms[0].values if terms else values
        hard = op in ("lte", "gte", "between", "not", "not_contains") or field == settings.stock_field or (
            op == "eq" and field in settings.hard_fields)
        out.append(Constraint(field, op, value, (0, 0), "", hard, 1.0, tuple(values)))
    return out


def hard_test(constraints: list[Constraint], schema: dict):
    """(filter over the attributes the catalogue has, excluded words) of the stated hard constraints."""
    planned = plan([c for c in constraints if c.hard], schema, ConstraintReading())
    return planned.filter(), planned.exclusions()


def derived_judgments(items: list[dict], base: pd.DataFrame, hybrid: HybridIndex, reader, settings,
                      tokens) -> pd.DataFrame:
    """Each set query's judgments: its base query's, less the products that break a stated hard constraint."""
    rows = []
    for item in items:
        if not item.get("base"):
            continue
        judged = base[base["query"] == item["base"]]
        expr, words = hard_test(stated(item, reader, settings), hybrid.schema)
        for pid, rel in zip(judged["product_id"], judged["relevance"]):
            hit = {"id": pid, "text": hybrid.texts.get(pid, ""), "attributes": hybrid.attributes_of(pid)}
            if (expr is None or matches(expr, hit["attributes"])) and without_excluded([hit], words, tokens):
                rows.append((item["query"], pid, rel))
    return pd.DataFrame(rows, columns=["query", "product_id", "relevance"])


def stripped(text: str, plan_: ConstraintPlan, which: str = "all") -> str:
    """``text`` without the words of its read constraints (the text the encoder and BM25 would see):
    ``all``; ``deal``: price bounds, stock and exclusions, which name no product; ``filtered``: the
    hard constraints applied as filters (the filter already enforces them)."""
    keep = {"all": lambda p: True, "deal": lambda p: not p.constraint.values or p.constraint.op == "not",
            "filtered": lambda p: p.constraint.hard and p.status == "applied"}[which]
    spans = sorted(p.constraint.span for p in plan_.items if keep(p))
    out, at = [], 0
    for a, b in spans:
        out.append(text[at:a])
        at = b
    out.append(text[at:])
    return " ".join("".join(out).split()) or text


class Bench:
    """One dataset's ranking path, offline, as the server runs it."""

    def __init__(self, prepared: Path, index_dir: str, reranker: str | None, settings: ConstraintReading):
        self.prepared = prepared
        self.ranker = OfflineRanker(str(prepared), index_dir)
        self.settings = settings
        self.reader = ConstraintReader.for_catalogue(settings, prepared)
        self.schema = catalogue_schema(prepared)
        self.tokens = LexicalTokenizer()
        self.stage = FirstStage()
        self.rerank_stage = RerankStage(model=reranker)
        self.reranker = None
        if reranker:
            from model.reranker import Reranker

            self.reranker = Reranker.load(reranker)

    def plans(self, texts: list[str], reading: bool, settings: ConstraintReading | None = None) -> list[ConstraintPlan]:
        settings = settings or self.settings
        reader = ConstraintReader(settings, self.schema, self.reader.vocabulary)
        return [plan(reader.read(t), self.schema, settings) if reading else ConstraintPlan(()) for t in texts]

    def rank(self, texts: list[str], plans: list[ConstraintPlan], boost: int | None = None,
             seen: list[str] | None = None) -> tuple[list[list[dict]], list[ConstraintPlan]]:
        """Per text: the ranked hits (first stage within the plan, reranked, soft-boosted) and the plans
        as applied; ``seen``: the texts the encoder and BM25 see (default: ``texts``)."""
        seen = seen or texts
        vectors = self.ranker.encoder.encode(seen, batch_size=128, role="query")
        dense, lexical, plans = self.ranker.sides_within(seen, vectors, self.stage, plans, K, self.tokens)
        fused = HybridIndex.fused(dense, lexical, self.stage)
        hits = [[{"id": p, "text": self.ranker.hybrid.texts.get(p, ""), "score": s,
                  "attributes": self.ranker.hybrid.attributes_of(p)} for p, s in ranking.items()] for ranking in fused]
        if self.reranker is not None:  # one query at a time, as the server does: batch-independent scores
            depth = self.rerank_stage.depth
            hits = [rerank(row, self.reranker.score(t, [h["text"] for h in row[:depth]]), depth,
                           self.rerank_stage.weight) for t, row in zip(seen, hits)]
        places = self.settings.soft_boost if boost is None else boost
        return [boosted(row, p, places) for row, p in zip(hits, plans)], plans


def as_runs(queries: list[str], hits: list[list[dict]]) -> dict:
    return {q: {h["id"]: float(len(row) - i) for i, h in enumerate(row)} for q, row in zip(queries, hits)}


def violations(items: list[dict], hits: dict, bench: Bench, texts: dict) -> tuple[float, int]:
    """Mean share of the top 10 breaking a stated hard constraint, over queries where >= 10 products meet them."""
    table = bench.ranker.hybrid.attributes
    shares = []
    for item in items:
        expr, words = hard_test(stated(item, bench.reader, bench.settings), bench.schema)
        if expr is None and not words:
            continue
        allowed = table.mask(expr) if expr is not None else np.ones(table.rows, bool)
        ids = [p for p, ok in zip(bench.ranker.hybrid.catalogue_rows, allowed) if ok]
        if words:
            ids = [h["id"] for h in without_excluded([{"id": p, "text": texts[p]} for p in ids], words, bench.tokens)]
        if len(ids) < K:
            continue
        ok = set(ids)
        top = hits[item["query"]][:K]
        shares.append(sum(h["id"] not in ok for h in top) / max(len(top), 1))
    return (float(np.mean(shares)) if shares else 0.0), len(shares)


def soft_met(items: list[dict], hits: dict, bench: Bench) -> float:
    """Mean share of the top 10 meeting every stated soft constraint, over queries that state one."""
    shares = []
    for item in items:
        soft = [c for c in stated(item, bench.reader, bench.settings) if not c.hard and c.field in bench.schema]
        if not soft:
            continue
        tests = [parse_filter(c.expression(bench.settings.about_band), bench.schema) for c in soft]
        top = hits[item["query"]][:K]
        shares.append(sum(all(matches(t, h.get("attributes") or {}) for t in tests) for h in top) / max(len(top), 1))
    return float(np.mean(shares)) if shares else float("nan")


def dataset_block(name: str, bench: Bench, items: list[dict], base: pd.DataFrame) -> tuple[str, dict]:
    texts = bench.ranker.hybrid.texts
    queries = [i["query"] for i in items]
    corrected = bench.ranker.corrected(queries)
    read = {q: bench.reader.read(t) for q, t in zip(queries, corrected)}
    acc = accuracy(read, items)
    judgments = derived_judgments(items, base, bench.ranker.hybrid, bench.reader, bench.settings, bench.tokens)
    judged = judged_from_frame(judgments)
    constrained = [i for i in items if i["constraints"]]
    c_queries = [i["query"] for i in constrained]
    c_texts = bench.ranker.corrected(c_queries)
    systems = {}
    off_hits, _ = bench.rank(c_texts, bench.plans(c_texts, False))
    systems["reader off"] = off_hits
    on_plans = bench.plans(c_texts, True)
    on_hits, applied = bench.rank(c_texts, on_plans)
    systems["reader on"] = on_hits
    systems["reader on, its words removed from the text"] = bench.rank(
        c_texts, on_plans, seen=[stripped(t, p) for t, p in zip(c_texts, on_plans)])[0]
    systems["reader on, price / stock / exclusion words removed"] = bench.rank(
        c_texts, on_plans, seen=[stripped(t, p, "deal") for t, p in zip(c_texts, on_plans)])[0]
    systems["reader on, the words of applied filters removed"] = bench.rank(
        c_texts, on_plans, seen=[stripped(t, p, "filtered") for t, p in zip(c_texts, on_plans)])[0]
    sweep = {}
    if name == "zh-demo":
        for b in BOOSTS:
            sweep[b] = bench.rank(c_texts, on_plans, boost=b)[0]
    scored_queries = [q for q in c_queries if q in judged.binary]
    sub = replace(judged, graded={q: judged.graded[q] for q in scored_queries},
                  binary={q: judged.binary[q] for q in scored_queries},
                  candidates={q: judged.candidates[q] for q in scored_queries}, partial=None)
    lines, raw = [], {"accuracy": {k: v for k, v in acc.items() if k != "misses"}, "systems": {}}
    for system, hits in systems.items():
        runs = as_runs(c_queries, hits)
        metrics = evaluate_run(runs, sub) if scored_queries else {"ndcg@10": float("nan")}
        share, counted = violations(constrained, dict(zip(c_queries, hits)), bench, texts)
        met = soft_met(constrained, dict(zip(c_queries, hits)), bench)
        raw["systems"][system] = {"ndcg@10": metrics["ndcg@10"], "violations": share, "counted": counted,
                                  "soft_met": met}
        lines.append(f"| {system} | {metrics['ndcg@10']:.3f} | {share:.3f} ({counted} queries) | {met:.3f} |")
    sweep_line = ""
    if sweep:
        scores = {b: (evaluate_run(as_runs(c_queries, h), sub)["ndcg@10"],
                      soft_met(constrained, dict(zip(c_queries, h)), bench)) for b, h in sweep.items()}
        raw["boost_sweep"] = scores
        sweep_line = ("Soft boost (places a product meeting every soft constraint moves up): nDCG@10 / share of the "
                      "top 10 meeting every soft constraint: " + ", ".join(
                          f"{b}: {n:.3f} / {m:.3f}" for b, (n, m) in scores.items())
                      + f"; default {bench.settings.soft_boost}.")
    relaxed = sum(any(p.status == "relaxed" for p in pl.items) for pl in applied)
    miss_lines = "\n".join(f"- {m['kind']}: `{m['query']}` -> {tuple(m['constraint'])}" for m in acc["misses"]) or "- none"
    block = f"""
### {name}: {len(items)} queries, {sum(len(i['constraints']) for i in items)} labelled constraints

Reader: **precision {acc['precision']:.3f}, recall {acc['recall']:.3f}** ({acc['tp']} right, {acc['fp']} extra,
{acc['fn']} missed).

Ranking on the {len(constrained)} queries that state a constraint ({len(scored_queries)} with judged products,
scored on their base query's judgments less the products breaking a stated hard constraint); violation share:
the top 10's products breaking a stated hard constraint, over queries where at least 10 products meet them.
Queries relaxed with the reader on: {relaxed}. The share meeting every soft constraint is lower with the reader
on because its hard filters leave fewer products that meet them as well; the boost sweep shows the boost's own effect.

| system | nDCG@10 | top-10 violation share | top 10 meeting every soft constraint |
|---|---|---|---|
{chr(10).join(lines)}

{sweep_line}

Misses:
{miss_lines}
"""
    return block, raw


def homedepot_split(bench: Bench) -> tuple[str, dict]:
    """The served default over the whole test split: reader off, on, and on with brands as boosts."""
    judged = judged_from_frame(load_split(bench.prepared, "test"))
    queries = judged.queries
    texts = bench.ranker.corrected(queries)
    on_plans = bench.plans(texts, True)
    read = [bool(p.items) for p in on_plans]
    systems = {"off": bench.rank(texts, bench.plans(texts, False))[0], "on": bench.rank(texts, on_plans)[0],
               "on, brands as boosts": bench.rank(texts, bench.plans(
                   texts, True, replace(bench.settings, hard_fields=())))[0]}
    out, raw = [], {}
    for label, keep in (("reads nothing", [not r for r in read]), ("reads a constraint", read),
                        ("all", [True] * len(read))):
        qs = [q for q, k in zip(queries, keep) if k]
        sub = replace(judged, graded={q: judged.graded[q] for q in qs}, binary={q: judged.binary[q] for q in qs},
                      candidates={q: judged.candidates[q] for q in qs}, partial=None)
        scores = {name: evaluate_run(as_runs(queries, hits), sub) for name, hits in systems.items()}
        same = sum([h["id"] for h in a] == [h["id"] for h in b]
                   for a, b, k in zip(systems["on"], systems["off"], keep) if k)
        raw[label] = {"queries": len(qs), "identical": same, **scores}
        off, on, soft = scores["off"], scores["on"], scores["on, brands as boosts"]
        out.append(f"| {label} | {len(qs)} | {off['ndcg@10']:.4f} | {on['ndcg@10']:.4f} ({on['ndcg@10'] - off['ndcg@10']:+.4f}) "
                   f"| {soft['ndcg@10']:.4f} ({soft['ndcg@10'] - off['ndcg@10']:+.4f}) | {off['recall@100']:.4f} "
                   f"| {on['recall@100']:.4f} | {soft['recall@100']:.4f} | {same} |")
    return "\n".join(out), raw


def latency(readers: list[tuple[ConstraintReader, dict, list[str]]], repeats: int = 5) -> dict:
    times = []
    for reader, schema, texts in readers:
        for _ in range(repeats):
            for t in texts:
                start = time.perf_counter()
                plan(reader.read(t), schema, reader.settings)
                times.append(1000 * (time.perf_counter() - start))
    return {"p50_ms": float(np.percentile(times, 50)), "p99_ms": float(np.percentile(times, 99)), "n": len(times)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default=str(default_workdir()))
    parser.add_argument("--homedepot-index", default=None, help="default WORKDIR/homedepot/finetuned/index")
    parser.add_argument("--reranker", default=None, help="default WORKDIR/homedepot/reranker/model")
    args = parser.parse_args(argv)
    from common.runtime import setup_logging

    setup_logging()
    root = Path(args.workdir)
    settings = ConstraintReading()

    zh = Bench(root / "zh-demo" / "data", str(root / "zh-demo" / "index"), None, settings)
    zh_items = load_set("zh-demo")
    zh_block, zh_raw = dataset_block("zh-demo", zh, zh_items, pd.read_csv(ZH_JUDGMENTS))

    hd_prepared = root / "homedepot" / "data"
    hd = Bench(hd_prepared, args.homedepot_index or str(root / "homedepot" / "finetuned" / "index"),
               args.reranker or str(root / "homedepot" / "reranker" / "model"), settings)
    hd_items = load_set("homedepot")
    hd_block, hd_raw = dataset_block("homedepot", hd, hd_items, load_split(hd_prepared, "test"))
    split_lines, split_raw = homedepot_split(hd)

    hd_queries = judged_from_frame(load_split(hd_prepared, "test")).queries
    timing = latency([(zh.reader, zh.schema, [i["query"] for i in zh_items]),
                      (hd.reader, hd.schema, hd_queries + [i["query"] for i in hd_items])])
    both = {"zh": zh_raw["accuracy"], "hd": hd_raw["accuracy"]}
    tp = sum(a["tp"] for a in both.values())
    fp = sum(a["fp"] for a in both.values())
    fn = sum(a["fn"] for a in both.values())
    body = f"""
The labelled set: benchmarks/constraint_set/ (README: how it was written). The ranking path is the server's, run
offline (`OfflineRanker.sides_within`, the reranker, the soft boost): zh-demo with multilingual-e5-small (hybrid, no
reranker), Home Depot with the served default (fine-tuned MiniLM index, hybrid, reranker).

**Both sets: precision {tp / max(tp + fp, 1):.3f}, recall {tp / max(tp + fn, 1):.3f}** ({tp} right, {fp} extra, {fn}
missed). Reader latency (read + plan, one query, in the gateway's process): **p50 {timing['p50_ms']:.3f} ms, p99
{timing['p99_ms']:.3f} ms** over {timing['n']:,} reads.

{zh_block}

{hd_block}

### Home Depot test split, served default, reader on vs off (crowd labels)

| queries | n | nDCG@10 off | on | on, brands as boosts | Recall@100 off | on | on, brands as boosts | rankings identical (on vs off) |
|---|---|---|---|---|---|---|---|---|
{split_lines}
"""
    update_section("constraints", "Constraints read from the shopper's words", "python benchmarks/quality/bench_constraints.py",
                   body, raw={"zh": zh_raw, "hd": hd_raw, "split": split_raw, "latency": timing})
    print(body)


if __name__ == "__main__":
    main()
