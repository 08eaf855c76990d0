#!/usr/bin/env bash
# The product path on one GPU as a researcher runs it (issue 13, items 5 and 6): the real commands gdn-sweep,
# gdn-report and gdn-train, with Hydra, MLflow (sqlite) and data=text, on a real corpus. Parts, in one device
# call or several (each call <= 10 minutes; state lives in $ROOT, so a warm machine skips what is done):
#   install  the wheels of .whl-gdn/ (offline, to /tmp/site), then `pip install -e .` of gdn into a venv in $ROOT
#            that sees the image's packages; gdn-train, gdn-sweep and gdn-report on PATH; versions (~1 min)
#   corpus   the .py files under the image's site-packages, one document per file (sorted, none over 1 MB), capped
#            at $CORPUS_MB (120) MB; the BPE tokenizer and the token stream built once into data=text's cache (~2-3 min)
#   sweep    gdn-sweep baselines: the seven architectures at scale=small, default AdamW + cosine, $STEPS (300) steps
#            of 16 x 2048 tokens; then gdn-report; report.md, runs.csv and the plots to $OUT (~4 min at 200 steps on an H200);
#            SWEEP_MODELS=gdn,transformer sweeps those only
#   agree    GDN and Mamba2, 200 steps at the default learning rate, the Triton and the PyTorch backend (same seed,
#            same batches), and the Triton backend in fp32 (the yardstick of bf16's own effect; AGREE_FP32=0 skips
#            it); the first run alone, the others side by side (AGREE_PARALLEL, 3, at a time), each in a store of
#            its own; per model the largest, mean and last-50-step train-loss differences to $OUT/agree.json, each
#            run's log to $OUT/agree-RUN.log;
#            AGREE_MODELS="mamba2" (or "gdn") runs one model's runs only
#   sweep-agree  sweep, then agree without Triton runs of its own: the sweep's gdn and mamba2 children, of the same
#            seed, batches and settings, are the Triton runs (one call instead of two; SWEEP_LIMIT_S caps the sweep);
#            in two calls on a warm machine: SWEEP_ROOT=DIR ... sweep, then SWEEP_STORE=DIR/mlflow.db ... agree
#            (AGREE_STEPS = the sweep's STEPS)
# A part runs the earlier ones it needs when they are not done (a fresh machine); the training steps stop at the
# call's time limit ($CALL_LIMIT_S, 560 s from the start) so that the report and the logs still come back.
#   bash benchmarks/product_check.sh install corpus          # then: ... sweep   and   ... agree
# PRODUCT_CHECK_TINY=1: the same path at tiny sizes on the CPU (scale=tiny, a 2 MB corpus, 20 steps; agree: 2 steps,
# the Triton kernels under TRITON_INTERPRET=1), to test it.
set -o pipefail
parts=("${@:-install}")
start=$SECONDS
call_limit=${CALL_LIMIT_S:-560}

if [[ -n ${PRODUCT_CHECK_TINY:-} ]]; then
    # CPU test of this script: the shared dev venv holds every package; no wheels, no GPU
    LOGS=${OUT:-product_logs}; mkdir -p "$LOGS"
    export PYTHONPATH=src PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
    py=${PYTHON:-python3}
    ROOT=${GDN_PRODUCT_ROOT:-/tmp/gdn-product-tiny}
    CORPUS_MB=${CORPUS_MB:-2} STEPS=${STEPS:-20} AGREE_STEPS=${AGREE_STEPS:-2}
    size=(scale=tiny data.vocab_size=512 data.seq_len=128 data.batch_size=4 trainer.device=cpu)
    vocab=512 seq_len=128 wheel_site= tiny=1
    agree_size=(data.seq_len=64 data.batch_size=1 data.eval_sequences=2)  # few programs for the Triton interpreter
else
    source benchmarks/device_env.sh
    py=python3
    ROOT=${GDN_PRODUCT_ROOT:-/tmp/gdn-product}
    CORPUS_MB=${CORPUS_MB:-120} STEPS=${STEPS:-300} AGREE_STEPS=${AGREE_STEPS:-200}
    size=(scale=small data.vocab_size=8192 data.seq_len=2048 data.batch_size=16)
    vocab=8192 seq_len=2048 tiny= wheel_site=/tmp/site  # device_env.sh installed .whl-gdn/ there
    agree_size=()
fi
mkdir -p "$ROOT"
venv=$ROOT/venv corpus=$ROOT/corpus.jsonl cache=$ROOT/cache/text
data=(data=text "data.path=$corpus" "data.cache_dir=$cache" "${size[@]}")
helper="$py benchmarks/product_check.py"

seconds_left() { echo $((call_limit - (SECONDS - start))); }

install() {
    # A venv of our own that sees the image's packages (and /tmp/site's wheels) through a .pth: `pip install -e .`
    # then needs no network and leaves the image's environment as it is.
    local base
    base=$($py -c "import site; print(site.getsitepackages()[0])") || return 1
    rm -rf "$venv"
    $py -m venv --without-pip "$venv" || return 1
    local own
    own=$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") || return 1
    { [[ -n $wheel_site ]] && echo "$wheel_site"; echo "import site; site.addsitedir('$base')"; } > "$own/gdn-base.pth"
    "$venv/bin/python" -m pip install -q --no-index --no-deps --no-build-isolation -e . || return 1
    export PATH=$venv/bin:$PATH
    echo "python: $(command -v python3) $(python3 -V 2>&1); gdn-train: $(command -v gdn-train)"
    "$venv/bin/python" - <<'EOF' || return 1
import importlib.metadata as md
import gdn, torch
print("gdn from", gdn.__file__)
for name in ("torch", "triton", "hydra-core", "omegaconf", "antlr4-python3-runtime", "mlflow", "mlflow-skinny",
             "sqlalchemy", "alembic", "datasets", "tokenizers", "pyarrow", "numpy"):
    print(f"{name} {md.version(name)}")
import hydra, omegaconf, mlflow, datasets, sqlalchemy  # noqa: F401  what the commands import
print("cuda:", torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else "")
EOF
    # version conflicts between the wheels and the image's packages: reported, not fatal
    "$venv/bin/python" benchmarks/product_check.py requirements gdn
    gdn-sweep --list | tail -1 && gdn-models "${size[0]}" | head -12 || return 1
    touch "$ROOT/.installed"
}

ensure_installed() {
    if [[ -f $ROOT/.installed && -x $venv/bin/gdn-train ]]; then
        export PATH=$venv/bin:$PATH
    else
        install 2>&1 | tee -a "$LOGS/product_install.log" || return 1
        export PATH=$venv/bin:$PATH
    fi
}

build_corpus() {
    ensure_installed || return 1
    $helper corpus "$corpus" --max-mb "$CORPUS_MB" || return 1
    local t0=$SECONDS
    "$venv/bin/python" benchmarks/product_check.py tokenize "$corpus" --cache-dir "$cache" --vocab-size "$vocab" \
        --seq-len "$seq_len" || return 1
    echo "tokenizer training + tokenisation: $((SECONDS - t0)) s"
    touch "$ROOT/.corpus"
}

ensure_corpus() {
    ensure_installed || return 1
    [[ -f $ROOT/.corpus ]] || build_corpus 2>&1 | tee -a "$LOGS/product_corpus.log"
}

run_length() {  # STEPS: the overrides of a run's length, the sweep's and the agree runs' alike
    echo trainer.max_steps="$1" trainer.eval_every="$1" trainer.checkpoint_every="$1" sched.warmup_steps=$(($1 / 10))
}

sweep() {
    ensure_corpus || return 1
    # a fresh MLflow store per sweep: the report then holds this sweep's runs only (the token cache is shared)
    export GDN_OUTPUT_ROOT=${SWEEP_ROOT:-$ROOT/sweep-$(date +%H%M%S)}
    local limit=$(($(seconds_left) - 45)) t0=$SECONDS status=0
    ((limit > ${SWEEP_LIMIT_S:-limit})) && limit=$SWEEP_LIMIT_S
    if ((limit < 120)); then
        echo "only $limit s left of this call for the sweep: run the sweep part in a call of its own"; return 1
    fi
    echo "gdn-sweep baselines: $STEPS steps per architecture, at most $limit s"
    timeout -s INT "$limit" gdn-sweep baselines "${data[@]}" $(run_length "$STEPS") ${SWEEP_MODELS:+model=$SWEEP_MODELS} \
        || status=1
    echo "sweep wall time: $((SECONDS - t0)) s (exit status $status)"
    gdn-report baselines --out "$GDN_OUTPUT_ROOT/report" || status=1
    "$venv/bin/python" benchmarks/product_check.py runs --tracking-uri "sqlite:///$GDN_OUTPUT_ROOT/mlflow.db" \
        --out "$LOGS/sweep_runs.json" || status=1
    cp "$GDN_OUTPUT_ROOT"/report/{report.md,runs.csv,*.png} "$LOGS/" 2>/dev/null
    return $status
}

agree_run() {  # RUN LIMIT: one training of the agree part (RUN = MODEL-BACKEND), in a store of its own
    local run=$1 limit=$2 model=${1%-*} backend=${1#*-} precision=auto
    [[ $backend == fp32 ]] && backend=triton precision=fp32
    echo "== $run: $model, backend $backend, precision $precision: $AGREE_STEPS steps, at most $limit s"
    # the CPU test runs the Triton kernels under the interpreter
    GDN_OUTPUT_ROOT=$agree_root/$run env ${tiny:+TRITON_INTERPRET=$([[ $backend == triton ]] && echo 1 || echo 0)} \
        timeout -s INT "$limit" gdn-train model="$model" "${data[@]}" "${agree_size[@]}" \
        "model.mixers.$model.backend=$backend" trainer.precision=$precision seed=0 $(run_length "$AGREE_STEPS") \
        trainer.progress_bar=false logging.experiment_name=agree logging.run_name="$run" > "$LOGS/agree-$run.log" 2>&1
    local status=$?
    echo "== $run: exit status $status"; tail -3 "$LOGS/agree-$run.log"
    touch "$ROOT/.agree-$run-done"  # for a script that waits to start other work on the GPU
    return $status
}

agree() {
    ensure_corpus || return 1
    agree_root=$ROOT/agree-$(date +%H%M%S)
    # "fp32": the Triton run again without bf16 autocast, the yardstick of what bf16 alone changes (AGREE_FP32=0: not)
    # AGREE_MODELS ("gdn mamba2"): the models to compare. After the sweep part (sweep-agree), its gdn and mamba2
    # children, run with the same seed, batches and settings, are the Triton runs.
    local runs=() models=(${AGREE_MODELS:-gdn mamba2}) run status=0 pids=() stores=(${sweep_store:-})
    [[ -z ${sweep_store:-} ]] && for model in "${models[@]}"; do runs+=("$model-triton"); done
    for model in "${models[@]}"; do runs+=("$model-torch"); done  # the longest first
    [[ ${AGREE_FP32:-1} == 1 ]] && for model in "${models[@]}"; do runs+=("$model-fp32"); done
    # Without a sweep, the first run alone on the GPU (its data-wait share is clean); the others side by side to the
    # end of the call, AGREE_PARALLEL (3) at a time: their losses do not depend on timing, and the PyTorch runs are
    # slow and bound by the CPU. Four at a time do not fit an 80 GB card (Mamba2's PyTorch path alone takes 34 GB).
    if [[ -z ${sweep_store:-} ]]; then
        agree_run "${runs[0]}" $(($(seconds_left) / 3)) || status=1
        runs=("${runs[@]:1}")
    fi
    for run in "${runs[@]}"; do
        while (($(jobs -rp | wc -l) >= ${AGREE_PARALLEL:-3})); do sleep 2; done
        agree_run "$run" $(($(seconds_left) - 30)) & pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || status=1; done
    stores+=("$agree_root"/*/mlflow.db)
    "$venv/bin/python" benchmarks/product_check.py agree --tracking-uri "${stores[@]/#/sqlite:///}" \
        --experiments agree ${sweep_store:+baselines} --out "$LOGS/agree.json" || status=1
    "$venv/bin/python" benchmarks/product_check.py runs --tracking-uri "${stores[@]/#/sqlite:///}" \
        --out "$LOGS/agree_runs.json" || status=1
    return $status
}

status=0
for part in "${parts[@]}"; do
    case $part in
        install) install 2>&1 | tee "$LOGS/product_install.log" || status=1 ;;
        corpus) ensure_installed && build_corpus 2>&1 | tee "$LOGS/product_corpus.log" || status=1 ;;
        sweep) sweep 2>&1 | tee "$LOGS/product_sweep.log" || status=1 ;;
        agree)
            sweep_store=${SWEEP_STORE:-}  # an earlier call's sweep: its gdn and mamba2 children are the Triton runs
            agree 2>&1 | tee "$LOGS/product_agree.log" || status=1 ;;
        sweep-agree)
            AGREE_STEPS=$STEPS SWEEP_ROOT=$ROOT/sweep-$(date +%H%M%S) agree_size=()  # the sweep's sizes
            sweep 2>&1 | tee "$LOGS/product_sweep.log" || status=1
            sweep_store=$SWEEP_ROOT/mlflow.db
            agree 2>&1 | tee "$LOGS/product_agree.log" || status=1 ;;
        *) echo "unknown part $part: install | corpus | sweep | agree | sweep-agree"; exit 2 ;;
    esac
    [[ $status == 0 ]] || break
done
echo "product_check ${parts[*]}: exit status $status after $((SECONDS - start)) s"
exit $status
