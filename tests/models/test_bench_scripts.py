"""benchmarks/bench_models.py and bench_attention.py run end to end on the CPU (--smoke: toy shapes, the PyTorch
paths), so a device run does not fail on a typo; their tables have a row per case."""
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]  # the checkout (benchmarks/ is not in the package)


def run_script(name: str, *args: str) -> str:
    result = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / name), "--smoke", *args],
                            capture_output=True, text=True, timeout=300, env={"OMP_NUM_THREADS": "1", "PATH": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_bench_models_smoke():
    out = run_script("bench_models.py", "--models", "gdn_h1,samba")
    rows = [line for line in out.splitlines() if line.startswith("| gdn_h1 |") or line.startswith("| samba |")]
    assert [row.split(" | ")[2] for row in rows] == ["4 x 32", "2 x 64"] * 2
    assert all(float(row.split(" | ")[3].replace(",", "")) > 0 for row in rows), out  # tokens/s measured


def test_bench_attention_smoke():
    out = run_script("bench_attention.py")
    assert out.count("| ours (CPU path)") == 2 and "| SDPA, dense window mask |" in out
