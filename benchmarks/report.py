"""Write a benchmark's table into its own section of benchmarks/RESULTS.md (other sections kept)."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

from common.hardware import cpu_bf16_units

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = "# FirstLight benchmark results\n\nEach section is written by the script it names; rerun the script to refresh it.\n"


def machine() -> str:
    import os

    bf16 = cpu_bf16_units()  # bf16 speed on CPU depends on these instructions
    return (f"{os.cpu_count()} CPU cores, {platform.machine()}{' with ' + ' and '.join(bf16) if bf16 else ''}, "
            f"Python {platform.python_version()}, "
            f"torch {torch.__version__} ({'CUDA ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'})")


def update_section(name: str, title: str, command: str, body: str, raw: dict | None = None) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    section = (f"{start}\n## {title}\n\nCommand: `{command}`  \nMeasured {time.strftime('%Y-%m-%d')} on "
               f"{machine()}.\n\n{body.strip()}\n{end}")
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    RESULTS.write_text(text)
    if raw is not None:
        out = RESULTS.parent / "results"
        out.mkdir(exist_ok=True)
        (out / f"{name}.json").write_text(json.dumps(raw, indent=2) + "\n")
    print(body)
