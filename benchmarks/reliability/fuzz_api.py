"""Property-based fuzzing of a running FirstLight over its own OpenAPI document (schemathesis).

Every route is fuzzed twice, without and with the admin token. The checks: no 5xx, every status and
body as the document says, schema-violating input refused with a 4xx, 405s with an Allow header,
admin routes refusing callers without the token. Not checked: that every schema-valid request is
accepted, since JSON Schema cannot say "at most 128 tokens" or "an id that is in the index".

    python -m benchmarks.reliability.fuzz_api --url http://127.0.0.1:8000 --token-file TOKEN -n 100
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

CONFIG = Path(__file__).resolve().parents[2] / "tests" / "schemathesis.toml"
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,"
          "negative_data_rejection,unsupported_method,allow_header_conformance,ignored_auth,"
          "missing_required_header")


def fuzz(url: str, token: str | None, max_examples: int, report_dir: Path, seed: int = 1,
         timeout_s: int = 900) -> dict:
    """One schemathesis run: {requests, statuses, server_errors, passed, summary} from its HAR report."""
    report_dir.mkdir(parents=True, exist_ok=True)
    har = report_dir / f"{'admin' if token else 'anonymous'}.har.json"
    command = [str(Path(sys.executable).parent / "st"), "--config-file", str(CONFIG), "run",
               f"{url}/openapi.json", "--checks", CHECKS, "-n", str(max_examples), "--seed", str(seed),
               "--workers", "2", "--request-timeout", "60", "--output-truncate", "true", "--no-color",
               "--report", "har", "--report-har-path", str(har)]
    if token:
        command += ["-H", f"Authorization: Bearer {token}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    (Path(report_dir) / f"{har.stem}.out.txt").write_text(done.stdout)  # the whole run, failures first
    entries = json.loads(har.read_text())["log"]["entries"] if har.exists() else []
    statuses = Counter(entry["response"]["status"] for entry in entries)
    summary = [line for line in done.stdout.splitlines() if line.strip()][-25:]
    return {"requests": len(entries), "statuses": dict(sorted(statuses.items())),
            "server_errors": sum(n for s, n in statuses.items() if s >= 500), "passed": done.returncode == 0,
            "summary": "\n".join(summary)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--token-file", help="the admin token, to fuzz the admin routes past authentication")
    parser.add_argument("-n", "--max-examples", type=int, default=100)
    parser.add_argument("--report-dir", default="schemathesis-report")
    args = parser.parse_args(argv)
    token = Path(args.token_file).read_text().strip() if args.token_file else None
    for who in (None, token) if token else (None,):
        result = fuzz(args.url, who, args.max_examples, Path(args.report_dir))
        print(result["summary"])
        print(json.dumps({k: v for k, v in result.items() if k != "summary"}))


if __name__ == "__main__":
    main()
