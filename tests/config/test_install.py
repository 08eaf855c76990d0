"""gdn installs anywhere: a wheel built from the checkout carries the config tree and the sweeps; installed into a
fresh venv, `gdn-sweep` and `gdn-models` find them and `gdn-train` trains the default for a few steps from a
directory outside the checkout."""
from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD_INPUTS = ("pyproject.toml", "README.md", "src", "conf", "sweeps")


def build_wheel(tmp: Path) -> Path:
    """`pip wheel --no-deps` of a copy of the checkout's build inputs (the build writes build/ and egg-info beside
    its sources); no build isolation: the running environment's setuptools, no network."""
    source = tmp / "source"
    source.mkdir()
    for name in BUILD_INPUTS:
        if (ROOT / name).is_dir():  # symlinks kept: src/gdn/_conf links ../../conf, as in the checkout
            shutil.copytree(ROOT / name, source / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp / "dist")], check=True, timeout=300)
    return next((tmp / "dist").glob("gdn-*.whl"))


def fresh_venv(tmp: Path) -> Path:
    """A venv whose only gdn is the one installed into it; the other packages come from this environment's
    site-packages through a .pth path (a plain path: that folder's own .pth files, such as an editable gdn's, are
    not processed)."""
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    purelib = subprocess.run([str(venv / "bin" / "python"), "-c",
                              "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             check=True, capture_output=True, text=True).stdout.strip()
    (Path(purelib) / "parent_env.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return venv


@pytest.mark.slow
def test_a_wheel_installed_in_a_fresh_venv_trains_the_default_from_any_directory(tmp_path):
    pytest.importorskip("setuptools", reason="the wheel is built without isolation, by this environment's setuptools")
    wheel = build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"gdn/_conf/train.yaml", "gdn/_conf/model/gdn.yaml", "gdn/_sweeps/sweep/baselines.yaml"} <= names
    venv = fresh_venv(tmp_path)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                    "--no-deps", "--no-index", str(wheel)], check=True, timeout=300)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "MLFLOW_TRACKING_URI")}
    env.update(GDN_OUTPUT_ROOT=str(tmp_path / "out"), OMP_NUM_THREADS="1")

    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import gdn.config as c; print(c.CONF_DIR)"],
                           cwd=work, env=env, check=True, capture_output=True, text=True).stdout.strip()
    assert Path(where).is_relative_to(venv) and (Path(where) / "train.yaml").is_file()
    sweeps = subprocess.run([str(venv / "bin" / "gdn-sweep"), "--list"], cwd=work, env=env, check=True,
                            capture_output=True, text=True, timeout=120).stdout
    assert "baselines" in sweeps
    models = subprocess.run([str(venv / "bin" / "gdn-models"), "format=json"], cwd=work, env=env, check=True,
                            capture_output=True, text=True, timeout=300).stdout
    assert '"name": "gdn_h1"' in models

    result = subprocess.run([str(venv / "bin" / "gdn-train"), "trainer.max_steps=3", "trainer.eval_every=3",
                             "trainer.checkpoint_every=3", "trainer.progress_bar=false"],
                            cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "final eval accuracy" in result.stdout
    checkpoints = list((tmp_path / "out" / "runs").glob("*/*/checkpoints/step-000003"))
    assert len(checkpoints) == 1 and (checkpoints[0].parent / "latest").exists()
    assert not (work / "mlruns").exists()  # MLflow's artifacts go beside its store, not into the cwd
    assert (tmp_path / "out" / "mlartifacts").is_dir()
