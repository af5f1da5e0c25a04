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
# The demo page's browser test drives the OS's Chromium (never a downloaded browser): install it where
# this user may, else say now what is missing and how to get it.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=none; fi
  if [ "$SUDO" != none ] && command -v apt-get >/dev/null; then
    echo "Installing Chromium and ChromeDriver (apt) for the demo page's browser test ..."
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null \
      || echo "WARNING: could not install chromium chromium-driver; tests/test_demo.py will fail until they are installed" >&2
  else
    echo "WARNING: Chromium and ChromeDriver are not installed and this user cannot install OS packages;" >&2
    echo "         tests/test_demo.py (the browser test) will fail. Install them: apt-get install chromium chromium-driver" >&2
  fi
fi
python -c "import torch, ray, faiss, transformers, deepspeed; print(f'FirstLight environment ready: torch {torch.__version__}, ray {ray.__version__}, faiss {faiss.__version__}')"
