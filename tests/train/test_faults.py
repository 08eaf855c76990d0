"""Non-finite losses stop (or skip) with the step named; checkpoints survive a crash mid-save."""
from pathlib import Path

import pytest
import torch

from gdn.train import checkpoint as ckpt
from gdn.train.main import run
from gdn.train.trainer import NonFiniteLossError

# A learning rate this large blows the weights up after the first update: the next loss is not finite.
EXPLODING = ["optim.optimizer.lr=1e30", "sched=constant", "sched.warmup_steps=1", "trainer.grad_clip=null"]


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_state(compose_config, tmp_path: Path):
    with pytest.raises(NonFiniteLossError, match=r"non-finite .* at step \d+") as info:
        run(compose_config(*EXPLODING), tmp_path / "run")
    saved = ckpt.load_checkpoint(tmp_path / "run" / "checkpoints" / ckpt.LATEST)
    assert str(tmp_path / "run" / "checkpoints") in str(info.value)
    assert f"at step {saved['step'] + 1}" in str(info.value)  # the saved state is the one before the bad step
    assert all(torch.isfinite(p).all() for p in saved["model"].values())


def test_skip_policy_skips_then_stops_after_the_configured_count(compose_config, tmp_path: Path, capsys):
    with pytest.raises(NonFiniteLossError, match="too many skipped steps"):
        run(compose_config(*EXPLODING, "trainer.nan_policy=skip", "trainer.max_nan_skips=2"), tmp_path / "run")
    assert capsys.readouterr().err.count("step skipped") == 2


def test_crash_mid_save_leaves_the_previous_checkpoint_loadable(tmp_path: Path, monkeypatch):
    folder = tmp_path / "checkpoints"
    ckpt.save_checkpoint(folder, 1, {"step": 1, "weights": torch.ones(3)})

    def crash_midway(obj, f, *args, **kwargs):
        f.write(b"partial bytes of a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint(folder, 2, {"step": 2, "weights": torch.zeros(3)})
    monkeypatch.undo()
    latest = ckpt.load_checkpoint(folder / ckpt.LATEST)
    assert latest["step"] == 1 and torch.equal(latest["weights"], torch.ones(3))
    assert ckpt.resolve_checkpoint("auto", folder) == folder / ckpt.LATEST


def test_only_the_newest_checkpoints_are_kept(tmp_path: Path):
    for step in range(1, 5):
        ckpt.save_checkpoint(tmp_path, step, {"step": step}, keep=2)
    assert sorted(p.name for p in tmp_path.glob("step_*.pt")) == ["step_00000003.pt", "step_00000004.pt"]
