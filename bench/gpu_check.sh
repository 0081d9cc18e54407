#!/usr/bin/env bash
# The GPU proofs, unchanged on a lent GPU machine (the device tool) and here (CPU only: a smoke run).
#
#   bash bench/gpu_check.sh [--quick]      # figures to stdout, and to $OUT/gpu_check.json if OUT is set
#
# That machine has torch with CUDA, numpy, scipy, pandas, h5py and pyarrow but nothing can be
# fetched there and Ray does not fit in what travels, so this checks the torch paths (embedding,
# pretraining, STAGATE) and not Ray Data / Ray Train. Pure-Python packages it lacks (anndata and its
# dependencies) travel as wheels in .whl/ (see /work/.library/device/README.md); they are installed
# into /tmp/site first when present.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ -x .venv/bin/python ] && ! "$PY" -c "import torch" 2>/dev/null; then PY=.venv/bin/python; fi
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
json=${OUT:-/tmp}/gpu_check.json
"$PY" bench/gpu_check.py "$@" --json "$json"
echo "figures: $json"
