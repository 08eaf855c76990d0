#!/usr/bin/env bash
# The gated delta rule on a GPU machine: `tests` (pytest -m gpu: real shapes vs float64, ~6.5 min on an H100,
# mostly the float64 references), `bench [args]` (bench_gated_delta.py vs FLA 0.6.0 and SDPA, ~6.5 min with
# FLA's autotuning), or `all` (both: over the 10-minute limit of one device call).
# Run from the repository root; wheels of pytest, einops and FLA in .whl-gdn/ (BENCHMARKS.md).
# Logs go to $OUT (or ./gpu_logs when OUT is unset).
set -o pipefail
part=${1:-all}
shift
LOGS=${OUT:-gpu_logs}
mkdir -p "$LOGS"
export PYTHONPATH=src PYTHONUNBUFFERED=1
if ls .whl-gdn/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl-gdn/*.whl
    export PYTHONPATH=src:/tmp/site
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$LOGS/card.txt"
status=0
if [[ $part == tests || $part == all ]]; then
    python3 -m pytest -q -s -m gpu -p no:cacheprovider tests/kernels/test_gated_delta_triton.py 2>&1 \
        | tee "$LOGS/gpu_tests.log" || status=1
fi
if [[ $part == bench || $part == all ]]; then
    python3 benchmarks/bench_gated_delta.py "$@" 2>&1 | tee "$LOGS/bench.log" || status=1
fi
exit $status
