#!/usr/bin/env bash
# The trainer step of this tree beside an older one's in one device call, alternating, for the same-run check a
# change to a hot path needs (a slowdown or memory growth over 5% is a bug): benchmarks/bench_train.py single for
# each model of $MODELS, $ROUNDS times (baseline first), each run at most $RUN_LIMIT_S seconds. Prints each run's
# JSON line, then a table per model: tokens/s and peak memory of both trees (medians over the rounds), their
# ratio, and the last loss of each (same seed and batches: equal up to the kernels' own run-to-run noise).
# The baseline tree: `git archive REV src conf sweeps | tar -x -C .baseline` and this tree's bench_train.py copied
# into .baseline/benchmarks/ (the script imports the src/ beside it).
#   MODELS="gdn-small transformer-small" ARGS="--batch 16 --seq-len 2048 --documents 8 --compile on" \
#       bash benchmarks/bench_train_ab.sh
set -o pipefail
source benchmarks/device_env.sh > /dev/null
baseline=${BASELINE:-.baseline}
if [[ ! -f $baseline/benchmarks/bench_train.py || ! -d $baseline/src ]]; then
    echo "no $baseline/{src,benchmarks/bench_train.py}"; exit 2
fi
args=(--vocab 8192 --warmup 3 --steps 30 ${ARGS:---batch 16 --seq-len 2048 --documents 8 --compile on})
results=$LOGS/train_ab.jsonl
: > "$results"
for round in $(seq "${ROUNDS:-1}"); do
    for model in ${MODELS:-gdn-small}; do
        for tree in "$baseline" .; do
            echo "# round $round, $model, tree $tree"
            out=$(timeout "${RUN_LIMIT_S:-120}" python3 "$tree/benchmarks/bench_train.py" single --model "$model" \
                "${args[@]}" 2>&1 | grep -E '^\{|Error|error' | tail -3)
            echo "$out"
            grep '^{' <<< "$out" | sed "s|^{|{\"tree\": \"$tree\", |" >> "$results"
        done
    done
done
python3 - "$results" "$baseline" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
baseline = sys.argv[2]
print("| model | tokens/s baseline / this | ratio | peak GiB baseline / this | last loss baseline / this |")
print("|---|---|---|---|---|")
for model in dict.fromkeys(r["model"] for r in rows):
    def of(tree, key):
        values = [r[key] for r in rows if r["model"] == model and r["tree"] == tree and r.get(key) is not None]
        return statistics.median(values) if values else None
    old, new = of(baseline, "tokens_per_s"), of(".", "tokens_per_s")
    ratio = f"{new / old:.3f}" if old and new else "-"
    print(f"| {model} | {old} / {new} | {ratio} | {of(baseline, 'peak_allocated_gib')} / "
          f"{of('.', 'peak_allocated_gib')} | {of(baseline, 'last_loss')} / {of('.', 'last_loss')} |")
PY
