"""Launch paths as users run them: a `gdn-train -m` sweep under torchrun (one folder for all ranks, each job a
2-rank run), and SIGTERM (Slurm pre-emption) saving a checkpoint that a resumed run continues from."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from gdn.train import checkpoint as ckpt
from gdn.train.main import run
from gdn.train.spawn import free_port
from tests.train.conftest import TINY, TINY_DATA

TINY_CLI = [*TINY, "logging=none", *(f"data.{key}={value}" for key, value in TINY_DATA.items()
                                     if key not in ("eval_sequences",))]


def environment(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "GDN_OUTPUT_ROOT": str(tmp_path), "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def run_in_own_session(command: list[str], env: dict[str, str], timeout: float) -> tuple[int, str, str]:
    """Run `command` in a new session; on a timeout kill the whole session (torchrun's workers included)."""
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
    return proc.returncode, stdout, stderr


def test_a_sweep_under_torchrun_runs_each_job_on_both_ranks_in_one_folder(tmp_path: Path):
    returncode, stdout, stderr = run_in_own_session(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}", "-m",
         "gdn.train", "-m", "seed=0,1", *TINY_CLI, "trainer.max_steps=2", "trainer.checkpoint_every=2",
         "trainer.eval_every=2"],
        environment(tmp_path), timeout=300)
    assert returncode == 0, stderr[-4000:]
    sweeps = list((tmp_path / "multiruns").glob("*/*"))
    assert len(sweeps) == 1, sweeps  # both ranks formatted rank 0's launch time
    assert sorted(p.name for p in sweeps[0].iterdir() if p.is_dir()) == ["0", "1"]
    assert stdout.count("on 2 x cpu") == 2 and stdout.count("final eval accuracy") == 2  # rank 0 prints, per job
    for job in ("0", "1"):
        latest = ckpt.latest_checkpoint(sweeps[0] / job / "checkpoints")
        assert ckpt.read_trainer_state(latest)["world_size"] == 2
        assert sorted(p.name for p in latest.glob("rng-rank*.pt")) == ["rng-rank0.pt", "rng-rank1.pt"]
        assert (sweeps[0] / job / ".hydra" / "config.yaml").is_file()


def test_sigterm_saves_a_checkpoint_and_a_resumed_run_continues(compose_config, tmp_path: Path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gdn.train", *TINY_CLI, "trainer.max_steps=100000", "trainer.checkpoint_every=10",
         "trainer.eval_every=100000", f"hydra.run.dir={run_dir}"],
        env=environment(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while ckpt.latest_checkpoint(run_dir / "checkpoints") is None:  # training is under way
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    assert "SIGTERM: saved step" in stdout
    saved = ckpt.latest_checkpoint(run_dir / "checkpoints")
    step = ckpt.read_trainer_state(saved)["step"]
    assert step >= 10 and saved.name == ckpt.step_folder_name(step)

    resumed = run(compose_config("trainer.max_steps=100000", "trainer.resume=auto",
                                 f"trainer.stop_after_steps={step + 2}", "trainer.eval_every=100000"), run_dir)
    assert resumed.step == step + 2 and len(resumed.losses) == 2
