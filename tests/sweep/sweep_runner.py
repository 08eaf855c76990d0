"""Run a real sweep as the user would (a `gdn-train -m` / `gdn-sweep` process) at a tiny, CPU-fast size."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# Command-line overrides that make each job a few seconds: 4 steps on short MQAR sequences.
TINY_JOB = ["trainer.max_steps=4", "trainer.log_every=2", "trainer.eval_every=4", "trainer.checkpoint_every=4",
            "sched.warmup_steps=2", "data.seq_len=32", "data.num_kv_pairs=4", "data.batch_size=8",
            "data.num_eval_examples=32"]


def run_sweep(module: str, args: list[str], output_root: Path, tracking_uri: str | None = None):
    """`python -m MODULE ARGS...` with the output root (and sqlite store) under output_root; the finished process."""
    env = {**os.environ, "GDN_OUTPUT_ROOT": str(output_root), "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    proc = subprocess.run([sys.executable, "-m", module, *args, *TINY_JOB], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def printed_eval_losses(stdout: str) -> dict[str, float]:
    """{run id: eval loss} from the jobs' last lines: 'final eval accuracy A, eval loss L; MLflow run id ID at URI'."""
    found = {}
    for line in stdout.splitlines():
        if line.startswith("final eval accuracy"):
            loss = float(line.split("eval loss ")[1].split(";")[0])
            found[line.split("MLflow run id ")[1].split()[0]] = loss
    return found
