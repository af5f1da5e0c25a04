"""Write a benchmark's table into its own section of benchmarks/RESULTS.md (other sections kept)."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

from common.hardware import cpu_bf16_units

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
# FIRSTLIGHT_RESULTS names another file: a dry run (gpu_check.py --device cpu) writes there, never here.
RESULTS_ENV = "FIRSTLIGHT_RESULTS"


BENCH_EXTRA = "FIRSTLIGHT_EXTRA=cpu,bench bash scripts/setup.sh"


def need_bench_extra(module: str):
    """Import a package of the `bench` extra, or stop with the one command that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise SystemExit(f"this benchmark needs {module!r} from the bench extra: run `{BENCH_EXTRA}` "
                         "(or .venv/bin/pip install -e '.[cpu,dev,bench]')") from None


def results_file() -> Path:
    import os

    return Path(os.environ.get(RESULTS_ENV) or RESULTS)
HEADER = "# FirstLight benchmark results\n\nEach section is written by the script it names; rerun the script to refresh it.\n"


def machine() -> str:
    import os

    bf16 = cpu_bf16_units()  # bf16 speed on CPU depends on these instructions
    return (f"{os.cpu_count()} CPU cores, {platform.machine()}{' with ' + ' and '.join(bf16) if bf16 else ''}, "
            f"Python {platform.python_version()}, "
            f"torch {torch.__version__} ({'CUDA ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'})")


def update_section(name: str, title: str, command: str, body: str, raw: dict | None = None) -> None:
    results = results_file()
    text = results.read_text() if results.exists() else HEADER
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    section = (f"{start}\n## {title}\n\nCommand: `{command}`  \nMeasured {time.strftime('%Y-%m-%d')} on "
               f"{machine()}.\n\n{body.strip()}\n{end}")
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    results.write_text(text)
    if raw is not None:
        out = results.parent / "results"
        out.mkdir(exist_ok=True)
        (out / f"{name}.json").write_text(json.dumps(raw, indent=2) + "\n")
    print(body)
