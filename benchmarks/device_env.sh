# Sourced by the device scripts (gpu_check.sh, train_check.sh), from the repository root: the log folder $LOGS
# ($OUT, or ./gpu_logs), PYTHONPATH with src/ and the wheels of .whl-gdn/ (installed to /tmp/site), the card's name.
LOGS=${OUT:-gpu_logs}
mkdir -p "$LOGS"
export PYTHONPATH=src PYTHONUNBUFFERED=1
if ls .whl-gdn/*.whl >/dev/null 2>&1; then
    # once per machine: scripts started side by side (one per GPU) must not reinstall under each other's feet
    if [[ ! -f /tmp/site/.gdn-wheels ]]; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            .whl-gdn/*.whl && touch /tmp/site/.gdn-wheels
    fi
    export PYTHONPATH=src:/tmp/site
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$LOGS/card.txt"
