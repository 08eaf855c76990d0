#!/usr/bin/env bash
# The trainer step of this tree beside an older one's in one device call, alternating, for the same-run check a
# change to a hot path needs (a slowdown or memory growth over 5% is a bug): benchmarks/bench_train.py single for
# each model of $MODELS, $ROUNDS times (baseline first), each run at most $RUN_LIMIT_S seconds; one JSON line each.
# The baseline tree: `git archive REV src conf sweeps | tar -x -C .baseline` and this tree's bench_train.py copied into
# .baseline/benchmarks/ (the script imports the src/ beside it).
#   MODELS="gdn-small transformer-small" ARGS="--batch 16 --seq-len 2048 --documents 8" bash benchmarks/bench_train_ab.sh
set -o pipefail
source benchmarks/device_env.sh > /dev/null
baseline=${BASELINE:-.baseline}
[[ -f $baseline/benchmarks/bench_train.py && -d $baseline/src ]] || { echo "no $baseline/{src,benchmarks/bench_train.py}"; exit 2; }
args=(--vocab 8192 --warmup 3 --steps 30 ${ARGS:---batch 16 --seq-len 2048 --documents 8 --compile on})
for round in $(seq "${ROUNDS:-1}"); do
    for model in ${MODELS:-gdn-small}; do
        for tree in "$baseline" .; do
            echo "# round $round, $model, tree $tree"
            timeout "${RUN_LIMIT_S:-120}" python3 "$tree/benchmarks/bench_train.py" single \
                --model "$model" "${args[@]}" 2>&1 | grep -E '^\{|Error|error' | tail -3
        done
    done
done
