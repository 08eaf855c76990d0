#!/usr/bin/env bash
# Issue 15's same-run checks in one device call, from the repository root with .whl-gdn/ and .baseline/ carried
# (.baseline: the previous commit's src, conf and sweeps, and this tree's bench_train.py in .baseline/benchmarks/;
# BENCHMARKS.md gives the commands). Parts, in order (default: layout train):
#   layout   the varlen chunk layout's host cost, a build and a step's calls, this tree's and .baseline's (~30 s)
#   train    the trainer step at scale=small, 16 x 2048 on packed documents (8 a row), compiled, this tree beside
#            .baseline for $MODELS (default gdn-small transformer-small; ~1 min a run)
#   small    the small-model target: every architecture at scale=small as in train (this tree only), then a table
#            of tokens/s and each one's ratio to the Transformer's, all from this call (~40 s a run)
#   profile  the same step under torch.profiler for $PROFILE_MODELS (default gdn-small transformer-small): GPU busy
#            time against wall time, kernels a step, the top kernels (~1 min a run)
#   verify   the GPU tests of the launch reductions (compiled blocks against eager ones, the compiled loss, fused
#            AdamW, short conv, SwiGLU, models), in $WORKERS pytest-xdist processes (default 4; compiling is the
#            host's work) sharing the GPU (~4 min)
#   kernel-tests  the GPU tests of the gated delta rule's and the SSD's chunk kernels (float64 references at real
#            shapes, extreme gates, the custom ops), in $WORKERS pytest-xdist processes (default 2, ~3 min; 4
#            workers ran two tests out of an 80 GB card's memory: one test's float64 references hold 36 GB)
#   warps    the kernel-tests again with every fixed-warps chunk kernel at 8 warps (warps_probe.py as a pytest
#            plugin), then warps_probe.py: the op's times with each kernel at 4 or 8 warps, checked against float64
#            (~5 min)
#   graphs   gdn-small and transformer-small on whole rows (--documents 0), without and with Inductor's CUDA
#            graphs (bench_train.py --cudagraphs): what the launches still cost (~3 min)
#   ab       bench_gated_delta.py for ours alone, this tree and then .baseline's, each first checked against
#            float64 (--check), no FLA: the same-run check of a kernel change when device time is short (~2 min)
#   kernels  bench_gated_delta.py with FLA and SDPA and the stage breakdown, then ours from .baseline/src with its own
#            breakdown (~6 min; less with a warm FLA autotune cache, see fla)
#   fla      FLA's GatedDeltaNetForCausalLM at our GDN-1.3B sizes, 8 x 4096, bf16, fused AdamW (bench_fla_model.py;
#            its first steps autotune for minutes: a call of its own). Triton's autotuning results are kept on disk
#            and come back as $OUT/fla-autotune.tgz: copied to the repository root (.fla-autotune.tgz, carried), a
#            later call starts from them and times FLA with a warm autotune cache
#   big      our trainer at scale=1.3b, 8 x 4096, bf16 weights, compiled, for $BIG_MODELS (default gdn gdn_h1
#            gdn_h2 mamba2 samba transformer; 1-2 min each): on the same warm machine as fla, the same card
# verify, kernel-tests and warps run pytest-xdist: .whl-gdn/ holds pytest-xdist and execnet wheels beside pytest's
# (pip download as in benchmarks/product_wheels.txt's header, naming pytest-xdist execnet).
#   bash benchmarks/issue15_gpu.sh layout train        # logs in $OUT
set -o pipefail
source benchmarks/device_env.sh
start=$SECONDS

# Runs a command with Triton's autotuning results kept on disk: restored from .fla-autotune.tgz (carried) and
# written back to $OUT/fla-autotune.tgz (copy it to the repository root), so that a later call times FLA without
# autotuning for minutes first. Ours are not autotuned beyond the state kernels' two configs.
with_fla_autotune_cache() {
    local cache=/tmp/fla-triton-cache logs status
    mkdir -p "$cache"
    [[ -f .fla-autotune.tgz ]] && tar -xzf .fla-autotune.tgz -C "$cache" &&
        echo "FLA's autotune cache: $(tar -tzf .fla-autotune.tgz | grep -c autotune.json) results restored"
    TRITON_CACHE_AUTOTUNING=1 TRITON_CACHE_DIR=$cache "$@"
    status=$?
    logs=$(cd "$LOGS" && pwd)
    (cd "$cache" && find . -name '*.autotune.json' | tar -czf "$logs/fla-autotune.tgz" -T -)
    return $status
}
# pytest -m gpu on the given test files in $WORKERS (else WORKERS_DEFAULT) pytest-xdist processes, within
# $VERIFY_LIMIT_S; log $LOGS/NAME.log
gpu_tests() {
    local name=$1 workers_default=$2; shift 2
    timeout "${VERIFY_LIMIT_S:-300}" python3 -m pytest -q -m gpu -p no:cacheprovider --tb=short \
        -n "${WORKERS:-$workers_default}" "$@" 2>&1 | tee "$LOGS/$name.log" | tail -15
}
kernel_test_files=(tests/kernels/test_gated_delta_triton.py tests/kernels/test_extreme_gates.py
                   tests/kernels/test_torch_ops.py tests/kernels/test_ssd.py)
parts=("$@")
((${#parts[@]})) || parts=(layout train)
# the sweep's step at scale=small (data=text's 16 x 2048, BPE 8192, compiled), on DOCUMENTS packed documents a row
small_step=(--vocab 8192 --batch 16 --seq-len 2048 --documents "${DOCUMENTS:-8}" --compile on)
for part in "${parts[@]}"; do
    case $part in
        layout) for tree in src .baseline/src; do
                    PYTHONPATH=$tree:${PYTHONPATH#src:} python3 benchmarks/bench_chunk_layout.py
                done 2>&1 | tee "$LOGS/layout.log" ;;
        train) MODELS=${MODELS:-gdn-small transformer-small} bash benchmarks/bench_train_ab.sh 2>&1 |
                   tee "$LOGS/train_ab.log" ;;
        small) for model in transformer gdn gdn_h1 gdn_h2 deltanet mamba2 samba; do
                   timeout 120 python3 benchmarks/bench_train.py single --model "$model-small" "${small_step[@]}" \
                       --steps 20 2>/dev/null | grep '^{'
               done > "$LOGS/small-d${DOCUMENTS:-8}.jsonl"
               python3 - "$LOGS/small-d${DOCUMENTS:-8}.jsonl" <<'PY' | tee "$LOGS/small-d${DOCUMENTS:-8}.log"
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
reference = next((r["tokens_per_s"] for r in rows if r["model"] == "transformer-small"), None)
print("| model | tokens/s | / Transformer++ | step ms | peak GiB | last loss |")
print("|---|---|---|---|---|---|")
for r in rows:
    ratio = f"{r['tokens_per_s'] / reference:.3f}" if reference and r.get("tokens_per_s") else "-"
    print(f"| {r['model']} | {r.get('tokens_per_s')} | {ratio} | {1e3 * r.get('step_s', 0):.1f} | "
          f"{r.get('peak_allocated_gib')} | {r.get('last_loss')} |")
PY
               ;;
        profile) for model in ${PROFILE_MODELS:-gdn-small transformer-small}; do
                     echo "# $model"
                     timeout 150 python3 benchmarks/bench_train.py single --model "$model" "${small_step[@]}" \
                         --steps 10 --profile 5 2>&1 |
                         grep -E '^profile|^  |Error' | grep -v Traceback
                 done | tee "$LOGS/profile.log" ;;
        verify) gpu_tests verify 4 tests/train/test_compiled_matches_eager.py tests/train/test_loss.py \
                    tests/train/test_optim.py tests/kernels/test_short_conv.py tests/kernels/test_swiglu.py \
                    tests/models ;;
        kernel-tests) gpu_tests kernel_tests 2 "${kernel_test_files[@]}" ;;
        warps) GDN_WARPS=all=8 PYTHONPATH=$PYTHONPATH:benchmarks gpu_tests kernel_tests_8_warps 2 -p warps_probe \
                   "${kernel_test_files[@]}"
               timeout 240 python3 benchmarks/warps_probe.py 2>&1 | tee "$LOGS/warps_probe.log" ;;
        graphs) for model in transformer gdn; do
                    for graphs in "" --cudagraphs; do
                        timeout 150 python3 benchmarks/bench_train.py single --model "$model-small" \
                            "${small_step[@]}" --documents 0 --steps 20 $graphs 2>/dev/null | grep '^{'
                    done
                done > "$LOGS/graphs.jsonl"; cat "$LOGS/graphs.jsonl" ;;
        ab) bash benchmarks/gpu_check.sh bench-vs .baseline/src --anchors none --check ;;
        kernels) with_fla_autotune_cache bash benchmarks/gpu_check.sh bench-vs .baseline/src --breakdown ;;
        fla) with_fla_autotune_cache timeout "${FLA_LIMIT_S:-540}" python3 benchmarks/bench_fla_model.py 2>&1 |
                 tee "$LOGS/fla_model.log" ;;
        big) for model in ${BIG_MODELS:-gdn gdn_h1 gdn_h2 mamba2 samba transformer}; do
                 python3 benchmarks/bench_train.py single --model "$model-1.3b" --weights bf16 --compile on 2>&1 |
                     grep -E '^\{|Error' | tail -2
             done | tee "$LOGS/trainer_1.3b.log" ;;
        *) echo "unknown part $part: layout | train | small | profile | verify | kernel-tests | warps | graphs |" \
                    "ab | kernels | fla | big"; exit 2 ;;
    esac
    echo "$part done at $((SECONDS - start)) s"
done
