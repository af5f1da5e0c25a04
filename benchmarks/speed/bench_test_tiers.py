"""Wall time of the test tiers on a clean clone: the quick tier (`-m "not slow"`, while developing)
and the whole suite (the README's test command, what CI runs).

    python benchmarks/speed/bench_test_tiers.py --tiers quick,full

The clone is of HEAD (committed work only), made beside this checkout so that it finds `../shared` as
CI's clone does; it runs on this checkout's .venv with the clone first on the path, so nothing but the
committed tree is tested, and is removed afterwards.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.report import update_section  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TIERS = {"quick": ["-m", "not slow"], "full": []}


def run_tier(clone: Path, args: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(clone)}
    start = time.perf_counter()
    proc = subprocess.run([str(REPO / ".venv" / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests", *args], cwd=clone, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    summary = (proc.stdout.strip().splitlines() or [""])[-1]
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|errors?|deselected|skipped)", summary)}
    # the names of what failed, so a failing run says which test it was
    failures = [line for line in proc.stdout.splitlines() if line.startswith(("FAILED ", "ERROR "))]
    return {"seconds": round(seconds), "exit": proc.returncode, "summary": summary, "failures": failures, **counts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiers", default="quick,full")
    args = parser.parse_args()
    results = {}
    clone = REPO.parent / f"firstlight-clone-{os.getpid()}"  # beside the checkout: ../shared as in CI
    try:
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        (clone / ".venv").symlink_to(REPO / ".venv")
        commit = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=clone, text=True).strip()
        for tier in args.tiers.split(","):
            results[tier] = run_tier(clone, TIERS[tier])
            print(tier, results[tier])
    finally:
        shutil.rmtree(clone, ignore_errors=True)
    rows = [f"| {tier} | `pytest -q tests {' '.join(TIERS[tier])}`".replace("-m not slow", '-m "not slow"') +
            f" | {r['seconds'] // 60} min {r['seconds'] % 60:02d} s | {r.get('passed', 0)} |"
            f" {r.get('failed', 0) + r.get('errors', 0) + r.get('error', 0)} | {r.get('deselected', 0)} |" for tier, r in results.items()]
    failed = [f"- {tier}: `{line}`" for tier, r in results.items() for line in r["failures"]]
    body = f"""
A clean clone of commit {commit}, on this checkout's environment (`scripts/setup.sh`), no other work running.

| tier | command | wall time | passed | failed or errors | deselected |
|---|---|---|---|---|---|
{chr(10).join(rows)}
{chr(10) + "Failed:" + chr(10) + chr(10).join(failed) + chr(10) if failed else ""}"""
    update_section("test_tiers", "Test tiers", "python benchmarks/speed/bench_test_tiers.py --tiers " + args.tiers,
                   body, results)
    sys.exit(max(r["exit"] for r in results.values()))


if __name__ == "__main__":
    main()
