#!/usr/bin/env bash
# Issue 15's same-run checks in one device call, from the repository root with .whl-gdn/ and .baseline/ carried
# (.baseline: the previous commit's src, conf and sweeps, and this tree's bench_train.py in .baseline/benchmarks/;
# BENCHMARKS.md gives the commands). Parts, in order (default: layout train):
#   layout   the varlen chunk layout's host cost, a build and a step's calls, this tree's and .baseline's (~30 s)
#   train    the trainer step at scale=small, 16 x 2048 on packed documents (8 a row), compiled, this tree beside
#            .baseline for $MODELS (default gdn-small transformer-small; ~1 min a run)
#   kernels  bench_gated_delta.py with FLA and SDPA and the stage breakdown, then ours from .baseline/src (~6 min)
#   bash benchmarks/issue15_gpu.sh layout train        # logs in $OUT
set -o pipefail
source benchmarks/device_env.sh
start=$SECONDS
parts=("$@")
((${#parts[@]})) || parts=(layout train)
for part in "${parts[@]}"; do
    case $part in
        layout) for tree in src .baseline/src; do
                    PYTHONPATH=$tree:${PYTHONPATH#src:} python3 benchmarks/bench_chunk_layout.py
                done 2>&1 | tee "$LOGS/layout.log" ;;
        train) MODELS=${MODELS:-gdn-small transformer-small} bash benchmarks/bench_train_ab.sh 2>&1 |
                   tee "$LOGS/train_ab.log" ;;
        kernels) bash benchmarks/gpu_check.sh bench-vs .baseline/src --breakdown ;;
        *) echo "unknown part $part: layout | train | kernels"; exit 2 ;;
    esac
    echo "$part done at $((SECONDS - start)) s"
done
