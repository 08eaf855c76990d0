#!/usr/bin/env bash
# Issue 13's GPU checks in one device call (~9 min on an H200), from the repository root with .whl-gdn/ carried:
#   1. wy_backward_probe.py: the WY backward's intermediates and gradients per kernel variant vs float64, then the
#      ms of the timed variants (quiet GPU: nothing else runs yet)
#   2. side by side, on one GPU (none of them is timed):
#      - pytest -m gpu: extreme gates and FLA's input distributions at real shapes, and the gated delta rule's GPU
#        tests (test_gated_delta_triton.py)
#      - product_check.sh install corpus: the product venv and the site-packages corpus
#      - paper_check.py at lr 2e-3 for the hybrids whose recall "failed" there (a fixed token budget, not a time
#        budget, since the GPU is shared)
# The machine stays warm (its state is in /tmp) for a call of its own each (~4 and ~8 min):
#   STEPS=200 bash benchmarks/product_check.sh sweep
#   CALL_LIMIT_S=580 bash benchmarks/product_check.sh agree
# (In one call beside the tests, agree ran out of time: the PyTorch GDN backend compiles for over 80 s.)
#   bash benchmarks/issue13_gpu.sh        # logs in $OUT
set -o pipefail
source benchmarks/device_env.sh
start=$SECONDS
(CORPUS_MB=${CORPUS_MB:-60} bash benchmarks/product_check.sh install corpus > "$LOGS/product_prepare.log" 2>&1
 echo "install corpus: exit $? at $((SECONDS - start)) s" >> "$LOGS/product_prepare.log") &
prepare=$!
python3 benchmarks/wy_backward_probe.py 2>&1 | tee "$LOGS/probe.log"
python3 benchmarks/wy_backward_probe.py --time 2>&1 | tee -a "$LOGS/probe.log"
echo "probe done at $((SECONDS - start)) s"

timeout 450 python3 -m pytest -q -s -m gpu -p no:cacheprovider tests/kernels/test_extreme_gates.py \
    tests/kernels/test_gated_delta_triton.py > "$LOGS/gpu_tests.log" 2>&1 &
tests=$!
timeout 450 python3 benchmarks/paper_check.py --models gdn_h1,gdn_h2 --lr 2e-3 --train-tokens 35000000 \
    --budget-s 200 --call-budget-s 440 --keep-going --out "$LOGS/paper_check_2e-3.jsonl" > "$LOGS/paper_check.log" 2>&1 &
paper=$!
wait $prepare
wait $tests; echo "gpu tests: exit $? at $((SECONDS - start)) s"
wait $paper; echo "paper check: exit $? at $((SECONDS - start)) s"
tail -3 "$LOGS/product_prepare.log"
grep -E "passed|failed|error" "$LOGS/gpu_tests.log" | tail -5
grep "gpu errors" "$LOGS/gpu_tests.log" | head -40
tail -25 "$LOGS/paper_check.log"
