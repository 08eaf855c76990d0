#!/usr/bin/env bash
# One device call: the gated delta rule's GPU tests, then the benchmark against FLA 0.6.0 and SDPA.
# Run from the repository root on a GPU machine; wheels for pytest, einops and FLA in .whl-gdn/ (see BENCHMARKS.md).
# Logs go to $OUT (or ./gpu_logs when OUT is unset).
set -o pipefail
LOGS=${OUT:-gpu_logs}
mkdir -p "$LOGS"
if ls .whl-gdn/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl-gdn/*.whl
    export PYTHONPATH=src:/tmp/site
else
    export PYTHONPATH=src
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$LOGS/card.txt"
python3 -m pytest -q -s -m gpu -p no:cacheprovider tests/kernels/test_gated_delta_triton.py 2>&1 | tee "$LOGS/gpu_tests.log"
tests=$?
python3 benchmarks/bench_gated_delta.py "$@" 2>&1 | tee "$LOGS/bench.log"
exit $(( tests || $? ))
