#!/usr/bin/env bash
# Issue 13's remaining GPU checks in one device call (~9.5 min on an H200), from the repository root with .whl-gdn/
# carried:
#   1. product_check.sh install corpus: the product venv and the site-packages corpus (~1 min)
#   2. product_check.sh agree: GDN and Mamba2 through gdn-train, Triton vs PyTorch backend vs Triton in fp32, 200
#      steps each; the first run (GDN, Triton) alone on the GPU, so that its data-wait share (issue 14) is clean
#   3. from the end of that first run, beside the other agree runs (whose losses do not depend on timing): pytest -m
#      gpu on $GPU_TESTS (default: extreme gates and FLA's input distributions at real shapes and the gated delta
#      rule's GPU tests)
#   bash benchmarks/issue13_gpu.sh        # logs in $OUT
set -o pipefail
source benchmarks/device_env.sh
start=$SECONDS call_limit=${CALL_LIMIT_S:-575}
root=${GDN_PRODUCT_ROOT:-/tmp/gdn-product}
CORPUS_MB=${CORPUS_MB:-60} bash benchmarks/product_check.sh install corpus > "$LOGS/product_prepare.log" 2>&1
echo "install corpus: exit $? at $((SECONDS - start)) s"
rm -f "$root"/.agree-*-done
CALL_LIMIT_S=$((call_limit - (SECONDS - start))) bash benchmarks/product_check.sh agree > "$LOGS/agree_stdout.log" 2>&1 &
agree=$!
while [[ ! -f $root/.agree-gdn-triton-done ]] && kill -0 $agree 2>/dev/null; do sleep 2; done
echo "first agree run done at $((SECONDS - start)) s"
timeout $((call_limit - (SECONDS - start) - 15)) python3 -m pytest -q -s -m gpu -p no:cacheprovider \
    ${GPU_TESTS:-tests/kernels/test_extreme_gates.py tests/kernels/test_gated_delta_triton.py} > "$LOGS/gpu_tests.log" 2>&1
echo "gpu tests: exit $? at $((SECONDS - start)) s"
wait $agree; echo "agree: exit $? at $((SECONDS - start)) s"
grep -E "passed|failed|error" "$LOGS/gpu_tests.log" | tail -8
grep "gpu errors" "$LOGS/gpu_tests.log" | head -40
grep -E "^==|eval loss|triton vs|\"run\"" "$LOGS/agree_stdout.log"
