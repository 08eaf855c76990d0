"""Checkpoints prove themselves: a damaged one is found, named and passed over (resume=auto) or refused (an explicit
path, gdn-eval, the export), and the run resumed from the newest intact one continues loss for loss."""
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from gdn.eval.loading import load_run
from gdn.train import checkpoint as ckpt
from gdn.train.checkpoint_record import DamagedCheckpointError, checkpoint_problems, crc32_of
from gdn.train.export import export_safetensors, load_consolidated_model_state
from gdn.train.main import run

# Checkpoints at steps 2 and 4 (both kept), then the run stops: step-000004 is `latest`.
INTERRUPTED = ["trainer.checkpoint_every=2", "trainer.stop_after_steps=4"]


def shard(step_dir: Path) -> Path:
    return next(step_dir.glob("*.distcp"))


def truncate_shard(step_dir: Path) -> str:
    path = shard(step_dir)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return f"{path.name} is {path.stat().st_size} bytes"


def remove_metadata(step_dir: Path) -> str:
    (step_dir / ".metadata").unlink()
    return ".metadata missing"


def flip_bytes(step_dir: Path) -> str:
    path = shard(step_dir)
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 8):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    return f"{path.name} has CRC-32"


def remove_marker(step_dir: Path) -> str:
    (step_dir / ckpt.COMPLETE).unlink()
    return "no COMPLETE marker"


DAMAGES = [truncate_shard, remove_metadata, flip_bytes, remove_marker]


@pytest.fixture
def interrupted(compose_config, tmp_path: Path):
    """(uninterrupted run's result, the run folder of a run stopped at step 4 with checkpoints 2 and 4, its
    result)."""
    straight = run(compose_config(), tmp_path / "straight")
    first = run(compose_config(*INTERRUPTED), tmp_path / "interrupted")
    assert first.step == 4
    assert ckpt.latest_checkpoint(tmp_path / "interrupted" / "checkpoints").name == "step-000004"
    return straight, tmp_path / "interrupted", first


@pytest.mark.parametrize("damage", DAMAGES, ids=lambda f: f.__name__)
def test_resume_auto_passes_over_a_damaged_latest_and_continues_loss_for_loss(damage, interrupted, compose_config):
    straight, run_dir, first = interrupted
    found = damage(run_dir / "checkpoints" / "step-000004")
    with pytest.warns(UserWarning, match=rf"passed over damaged checkpoint\(s\) step-000004 \(.*{found}.*\); "
                                         r"resuming from step-000002"):
        resumed = run(compose_config("trainer.resume=auto"), run_dir)
    assert first.losses[:2] + resumed.losses == straight.losses  # exactly, from the step-2 checkpoint on
    assert resumed.eval_metrics == straight.eval_metrics and resumed.tokens_seen == straight.tokens_seen
    final_straight, final_resumed = (load_consolidated_model_state(r.checkpoint) for r in (straight, resumed))
    assert all(torch.equal(final_straight[k], final_resumed[k]) for k in final_straight)


def test_no_intact_checkpoint_stops_with_one_line_listing_each(interrupted, compose_config):
    _, run_dir, _ = interrupted
    truncated = truncate_shard(run_dir / "checkpoints" / "step-000004")
    remove_marker(run_dir / "checkpoints" / "step-000002")
    with pytest.raises(DamagedCheckpointError) as info:
        run(compose_config("trainer.resume=auto"), run_dir)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"trainer.resume=auto: no intact checkpoint in {run_dir / 'checkpoints'}: ")
    assert f"step-000004 ({truncated}" in message and "step-000002 (no COMPLETE marker" in message


def test_an_explicit_damaged_checkpoint_stops_with_one_line(interrupted, compose_config, tmp_path: Path):
    _, run_dir, _ = interrupted
    step_dir = run_dir / "checkpoints" / "step-000004"
    flipped = flip_bytes(step_dir)
    with pytest.raises(DamagedCheckpointError, match=rf"^trainer.resume={step_dir}: checkpoint step-000004 "
                                                     rf"\({flipped} .*\) is damaged; pass an older step folder"):
        run(compose_config(f"trainer.resume={step_dir}"), tmp_path / "other")
    with pytest.raises(DamagedCheckpointError, match="checkpoint step-000004"):  # its checkpoints/ folder: latest
        run(compose_config(f"trainer.resume={run_dir / 'checkpoints'}"), tmp_path / "other")


def test_eval_and_export_refuse_a_damaged_checkpoint(interrupted, tmp_path: Path):
    _, run_dir, _ = interrupted
    found = truncate_shard(run_dir / "checkpoints" / "step-000004")
    with pytest.raises(DamagedCheckpointError, match=rf"export of .*: checkpoint step-000004 \({found}"):
        export_safetensors(run_dir / "checkpoints", tmp_path / "model.safetensors")
    assert not (tmp_path / "model.safetensors").exists()
    with pytest.raises(DamagedCheckpointError, match=rf"loading .*step-000004: checkpoint step-000004 \({found}"):
        load_run(run_dir)
    assert load_run(run_dir / "checkpoints" / "step-000002").checkpoint.step == 2  # the intact one loads


def test_the_marker_records_every_file_with_its_size_and_checksum(interrupted):
    _, run_dir, _ = interrupted
    step_dir = run_dir / "checkpoints" / "step-000004"
    files = json.loads((step_dir / ckpt.COMPLETE).read_text())["files"]
    on_disk = sorted(p.name for p in step_dir.iterdir() if p.name != ckpt.COMPLETE)
    assert sorted(files) == on_disk and {".metadata", "trainer.json", "rng-rank0.pt"} <= set(files)
    for name, record in files.items():
        assert record == {"size": (step_dir / name).stat().st_size, "crc32": crc32_of(step_dir / name)}
    assert checkpoint_problems(step_dir) == []


def test_a_checkpoint_from_before_the_record_is_still_trusted(interrupted):
    _, run_dir, _ = interrupted
    step_dir = run_dir / "checkpoints" / "step-000004"
    (step_dir / ckpt.COMPLETE).write_text("")  # the empty marker gdn wrote before
    assert checkpoint_problems(step_dir) == []


def test_the_skipped_checkpoint_is_tagged_on_the_mlflow_run(compose_config, tmp_path: Path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run(compose_config("logging=mlflow", *INTERRUPTED), tmp_path / "run")
    run_id = capsys.readouterr().out.split("MLflow run id ")[1].split()[0]
    found = remove_metadata(tmp_path / "run" / "checkpoints" / "step-000004")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run(compose_config("logging=mlflow", "trainer.resume=auto"), tmp_path / "run")
    tags = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(run_id).data.tags
    assert tags["resume_skipped_damaged"] == f"step-000004 ({found})"


def test_gdn_train_prints_the_one_line_without_a_traceback(interrupted, tmp_path: Path):
    from tests.train.conftest import TINY

    _, run_dir, _ = interrupted
    step_dir = run_dir / "checkpoints" / "step-000004"
    found = truncate_shard(step_dir)
    proc = subprocess.run([sys.executable, "-m", "gdn.train", *TINY, "logging=none", f"paths.output_root={tmp_path}",
                           f"hydra.run.dir={tmp_path / 'other'}", "data.vocab_size=64", "data.seq_len=32",
                           f"trainer.resume={step_dir}"], capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(
        f"error: trainer.resume={step_dir}: checkpoint step-000004 ({found}")
