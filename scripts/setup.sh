#!/usr/bin/env bash
# Create .venv and install FirstLight for this machine.
#   bash scripts/setup.sh          CPU machine (faiss-cpu, CPU torch)
#   FIRSTLIGHT_EXTRA=gpu bash scripts/setup.sh   GPU machine (faiss-gpu-cu12, CUDA torch from PyPI)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
EXTRA=${FIRSTLIGHT_EXTRA:-cpu}
[ -d .venv ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch first and pinned: an unpinned torch pulled in by another package would be a multi-GB CUDA build.
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[${EXTRA},dev]"
python -c "import torch, ray, faiss, transformers, deepspeed; print(f'FirstLight environment ready: torch {torch.__version__}, ray {ray.__version__}, faiss {faiss.__version__}')"
