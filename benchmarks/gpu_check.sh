#!/usr/bin/env bash
# GPU checks, one part per device call (each must stay under the 10-minute limit of a call):
#   tests        pytest -m gpu on the gated delta rule: real shapes vs float64 (~6.5 min on an H100)
#   layers       pytest -m gpu on the layer kernels (conv, gated norm, gate) and the models (Triton vs PyTorch
#                GDN layer, bf16 training step of a hybrid): ~4-5 min, mostly Triton compilation
#   bench [args] bench_gated_delta.py vs FLA 0.6.0 and SDPA (~6.5 min with FLA's autotuning)
#   bench-vs DIR [args]  bench [args] (with FLA and SDPA), then the table for ours alone from DIR (an older commit's src/,
#                e.g. `git archive OLD src | tar -x -C .baseline`, carried), with [args] and DIR/../benchmarks/'s
#                bench_gated_delta.py where there is one: the same-run check of a hot-path change
#   scan         pytest -m gpu on the Mamba1 selective scan (kernel vs float64, layer vs PyTorch path, Samba
#                decode == full forward), then bench_selective_scan.py (Triton vs chunked PyTorch): ~3-5 min
#   mixers       pytest -m gpu on the SSD (Triton vs float64), FlexAttention SWA vs SDPA with a dense mask, decode ==
#                full forward for every architecture; then bench_attention.py (SWA vs SDPA/cuDNN, SSD vs mamba_ssm)
#   lean         pytest -m gpu on the memory-lean parts: RMSNorm and SwiGLU kernels, the SSD's lean backward, the
#                gated delta rule's recompute_states (~2 min)
#   ops          the kernels as torch.ops.gdn custom ops: opcheck on the device (~4 min), then check_torch_ops.py
#                (graph breaks, inductor vs eager, kernel runs under op-level checkpointing, step ms for GDN, Mamba2
#                and Mamba1 blocks; ~4 min). The kernels' GPU tests call them through the ops: parts scan, mixers.
#   all          tests + bench (over the limit of one call: for a machine without that limit)
# Run from the repository root; wheels of pytest, einops and FLA in .whl-gdn/ (BENCHMARKS.md).
# Logs go to $OUT (or ./gpu_logs when OUT is unset).
set -o pipefail
part=${1:-all}
shift
source benchmarks/device_env.sh
status=0
if [[ $part == tests || $part == all ]]; then
    python3 -m pytest -q -s -m gpu -p no:cacheprovider tests/kernels/test_gated_delta_triton.py 2>&1 \
        | tee "$LOGS/gpu_tests.log" || status=1
fi
if [[ $part == layers ]]; then
    python3 -m pytest -q -s -m gpu -p no:cacheprovider tests/kernels/test_short_conv.py \
        tests/kernels/test_gated_norm.py tests/kernels/test_gate.py tests/models/test_models_gpu.py 2>&1 \
        | tee "$LOGS/gpu_layers.log" || status=1
fi
if [[ $part == scan ]]; then
    samba_decode="tests/models/test_decode_gpu.py::test_prompt_then_steps_equals_full_forward_on_cuda[samba]"
    python3 -m pytest -q -s -m gpu -p no:cacheprovider tests/kernels/test_selective_scan_triton.py \
        tests/models/test_mamba1.py "$samba_decode" 2>&1 | tee "$LOGS/gpu_scan.log" || status=1
    python3 benchmarks/bench_selective_scan.py 2>&1 | tee "$LOGS/bench_scan.log" || status=1
fi
if [[ $part == mixers ]]; then
    python3 -m pytest -q -s -m gpu -p no:cacheprovider tests/kernels/test_ssd.py tests/models/test_attention_gpu.py \
        tests/models/test_decode_gpu.py 2>&1 | tee "$LOGS/gpu_mixers.log" || status=1
    python3 benchmarks/bench_attention.py --ssd-breakdown 2>&1 | tee "$LOGS/bench_attention.log" || status=1
fi
if [[ $part == lean ]]; then
    python3 -m pytest -q -s -m gpu -p no:cacheprovider tests/kernels/test_swiglu.py tests/kernels/test_gated_norm.py \
        tests/kernels/test_ssd.py "tests/kernels/test_gated_delta_triton.py::test_gpu_recompute_states_matches_float64_chunked" \
        2>&1 | tee "$LOGS/gpu_lean.log" || status=1
fi
if [[ $part == ops ]]; then
    python3 -m pytest -q -s -p no:cacheprovider tests/kernels/test_torch_ops.py 2>&1 | tee "$LOGS/gpu_ops.log" || status=1
    python3 benchmarks/check_torch_ops.py 2>&1 | tee -a "$LOGS/gpu_ops.log" || status=1
fi
if [[ $part == bench || $part == all ]]; then
    python3 benchmarks/bench_gated_delta.py "$@" 2>&1 | tee "$LOGS/bench.log" || status=1
fi
if [[ $part == bench-vs ]]; then
    base=$1; shift
    python3 benchmarks/bench_gated_delta.py "$@" 2>&1 | tee "$LOGS/bench.log" || status=1
    # the older tree's own bench script where it has one (its stage breakdown calls its own stage functions)
    script=${base%/src}/benchmarks/bench_gated_delta.py
    [[ -f $script ]] || script=benchmarks/bench_gated_delta.py
    PYTHONPATH=$base:${PYTHONPATH#src:} python3 "$script" --anchors none "$@" 2>&1 \
        | tee "$LOGS/bench_baseline.log" || status=1
fi
exit $status
