"""The README's default run: `gdn-train` with no overrides, on the CPU, reaches the recall accuracy it promises."""
import os
import re
import subprocess
import sys
import time

import pytest


@pytest.mark.slow
def test_default_run_reaches_090_mqar_accuracy_within_five_minutes(tmp_path):
    env = {**os.environ, "GDN_OUTPUT_ROOT": str(tmp_path)}
    env.pop("MLFLOW_TRACKING_URI", None)
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "gdn.train", "trainer.progress_bar=false"], env=env,
                          capture_output=True, text=True, timeout=600)
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    final = re.search(r"final eval accuracy ([0-9.]+).*MLflow run id (\w+)", proc.stdout)
    assert final, proc.stdout[-3000:]
    print(f"default run: accuracy {final.group(1)} in {elapsed:.0f} s, run {final.group(2)}")
    assert float(final.group(1)) >= 0.9
    assert elapsed <= 300
    assert (tmp_path / "mlflow.db").is_file()
