#!/usr/bin/env bash
# GPU checks of the FSDP2 trainer (issue 5), one part per device call (each well under 10 minutes):
#   smoke        the script itself on a tiny GDN, one GPU (~1 min, mostly Triton compilation)
#   equality     NCCL: 10 fp32 steps of a tiny GDN on 2 GPUs == 1 GPU (needs 2 GPUs; ~2 min)
#   single       GDN scale=1.3b, 8 x 4096 tokens per step on one GPU: AC none, full, op (~6-8 min)
#   compile      the same with per-block torch.compile, AC full and none (~5-8 min)
#   bf16         single with trainer.weights_dtype=bf16 (FLA's anchor setup): AC none, full, op (~2 min)
#   scale N      FSDP2 over N GPUs (torchrun), 8 x 4096 tokens per GPU, AC full; run N = 1, 2, 4 (~3 min each)
# Needs torch, triton, numpy and tqdm (no Hydra / OmegaConf / MLflow); wheels in .whl-gdn/ are installed first.
# Run from the repository root. Logs and one JSON line per result go to $OUT (or ./gpu_logs).
set -o pipefail
part=${1:-smoke}
source benchmarks/device_env.sh
python3 -c "import numpy, tqdm" || { echo "missing numpy or tqdm: carry their wheels in .whl-gdn/"; exit 2; }
bench="python3 benchmarks/bench_train.py"
torchrun="python3 -m torch.distributed.run --standalone"
status=0
case $part in
    smoke)
        $bench single --model tiny --vocab 256 --batch 2 --seq-len 256 2>&1 | tee "$LOGS/train_smoke.log" || status=1 ;;
    equality)
        $bench equality --save "$LOGS/equality_1gpu.json" 2>&1 | tee "$LOGS/train_equality.log" || status=1
        $torchrun --nproc_per_node=2 benchmarks/bench_train.py equality --reference "$LOGS/equality_1gpu.json" 2>&1 \
            | tee -a "$LOGS/train_equality.log" || status=1 ;;
    single)
        for ac in none full op; do
            $bench single --ac "$ac" 2>&1 | tee -a "$LOGS/train_single.log" || status=1
        done ;;
    bf16)
        for ac in none full op; do
            $bench single --weights bf16 --ac "$ac" 2>&1 | tee -a "$LOGS/train_bf16.log" || status=1
        done ;;
    compile)
        for ac in full none; do
            $bench single --ac "$ac" --compile on 2>&1 | tee -a "$LOGS/train_compile.log" || status=1
        done ;;
    scale)
        n=${2:?usage: train_check.sh scale N}
        $torchrun --nproc_per_node="$n" benchmarks/bench_train.py fsdp --ac full 2>&1 \
            | tee -a "$LOGS/train_scale.log" || status=1 ;;
    *)
        echo "unknown part $part: smoke | equality | single | bf16 | compile | scale N"; exit 2 ;;
esac
grep -h '^{' "$LOGS"/train_*.log > "$LOGS/train_results.jsonl" 2>/dev/null
exit $status
