#!/usr/bin/env bash
# One device call (~8 min on an H200), from the repository root with .whl-gdn/ and .baseline/ carried:
#   1. in the background, at low CPU priority: product_check.sh install corpus (the product venv and the corpus that
#      the next calls' agree and sweep parts use; the machine stays warm for them)
#   2. bench_gated_delta.py with FLA and SDPA and the stage breakdown, then ours alone from .baseline/src (the
#      previous commit's src/): the same-run check of a hot-path change
#   bash benchmarks/issue15_gpu.sh        # logs in $OUT
set -o pipefail
source benchmarks/device_env.sh
start=$SECONDS
(CORPUS_MB=${CORPUS_MB:-60} nice -n 19 bash benchmarks/product_check.sh install corpus > "$LOGS/product_prepare.log" 2>&1
 echo "install corpus: exit $? at $((SECONDS - start)) s" >> "$LOGS/product_prepare.log") &
prepare=$!
bash benchmarks/gpu_check.sh bench-vs .baseline/src --breakdown
echo "bench done at $((SECONDS - start)) s"
wait $prepare
tail -3 "$LOGS/product_prepare.log"
