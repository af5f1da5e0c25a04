"""List the top-10 products of one or more runs on the densely judged pool that the pool does not
grade yet, shuffled and without saying which run returned them, for blind grading by the pool's
GUIDELINE.md (its README asks for this when a ranker's top 10 is under 90% inside the pool).

    python benchmarks/quality/pool_unjudged.py artifacts/homedepot/eval/pool.rerank.trec ... > to_grade.csv

The graded rows go to `benchmarks/results/pool_supplement.csv` (same columns as the pool's
judgments.csv plus `grader`); `benchmarks/quality/bench_rerank.py` scores on the pool plus that file.
"""

from __future__ import annotations

import csv
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from common.paths import default_homedepot_dir, default_workdir  # noqa: E402

SUPPLEMENT = Path(__file__).resolve().parents[1] / "results" / "pool_supplement.csv"


def main() -> None:
    import pandas as pd

    from common.text import normalize_text
    from data_pipeline.prepare import load_catalogue

    pool = pd.read_csv(default_homedepot_dir() / "judged_pool" / "judgments.csv", dtype=str)
    graded = {(normalize_text(q), p) for q, p in zip(pool["search_term"], pool["product_uid"])}
    if SUPPLEMENT.exists():
        extra = pd.read_csv(SUPPLEMENT, dtype=str)
        graded |= {(normalize_text(q), p) for q, p in zip(extra["search_term"], extra["product_uid"])}
    titles = dict(zip(*load_catalogue(default_workdir() / "homedepot" / "data")[["product_id", "title"]].T.values))
    wanted = set()
    for trec in sys.argv[1:]:
        results = json.loads(Path(trec).with_name(Path(trec).name.split(".")[0] + ".json").read_text())
        queries = results["query_order"]
        for line in Path(trec).read_text().splitlines():
            qid, _, pid, rank, _, _ = line.split()
            if int(rank) <= 10 and (queries[int(qid)], pid) not in graded:
                wanted.add((queries[int(qid)], pid))
    rows = sorted(wanted)
    random.Random(7).shuffle(rows)
    out = csv.writer(sys.stdout)
    out.writerow(["search_term", "product_uid", "title"])
    for query, pid in rows:
        out.writerow([query, pid, titles.get(pid, "")])


if __name__ == "__main__":
    main()
