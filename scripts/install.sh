#!/usr/bin/env bash
# Installs the system packages, then creates .venv with the pinned Python dependencies. Idempotent: a stamp of requirements.txt skips a repeat run.
# Why the order: torch first (PyPI's CUDA build; the local CPU-only wheel must not win), then everything else without
# build isolation so source packages that build against torch (sam2, deepspeed) use the pinned torch, not a new download.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_system.sh  # Orthanc + DICOMweb plugin (the example PACS) and Chromium (the OHIF test)
bash scripts/install_viewer.sh || echo "install: stock OHIF not fetched (only tests/whole_day/test_stock_ohif.py needs it; it skips)"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
STAMP=.venv/.installed-$(cat requirements.txt scripts/install.sh | sha256sum | cut -c1-16)
if [ -f "$STAMP" ]; then echo "install: .venv is up to date ($STAMP)"; exit 0; fi
PIP=".venv/bin/python -m pip"
export PIP_DISABLE_PIP_VERSION_CHECK=1
$PIP install -q --upgrade "pip==25.3" "setuptools==80.9.0" "wheel==0.45.1" "ninja==1.13.2"
$PIP install -q "torch==2.13.0,!=2.13.0+cpu" "torchvision==0.28.0"
$PIP install -q --no-build-isolation -r requirements.txt
.venv/bin/python -c "import torch, torchvision, monailabel, transformers, segment_anything; print('installed: torch', torch.__version__, 'monailabel', monailabel.__version__, 'transformers', transformers.__version__)"
rm -f .venv/.installed-* && touch "$STAMP"
