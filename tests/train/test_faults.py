"""Non-finite losses stop (or skip) with the step named; checkpoints survive a crash mid-save."""
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp

from gdn.train import checkpoint as ckpt
from gdn.train.export import load_consolidated_model_state
from gdn.train.main import run
from gdn.train.trainer import NonFiniteLossError

# A learning rate this large blows the weights up after the first update: the next loss is not finite.
EXPLODING = ["optim.optimizer.lr=1e30", "sched=constant", "sched.warmup_steps=1", "trainer.grad_clip=null"]


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_state(compose_config, tmp_path: Path):
    with pytest.raises(NonFiniteLossError, match=r"non-finite .* at step \d+") as info:
        run(compose_config(*EXPLODING), tmp_path / "run")
    latest = ckpt.latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert str(tmp_path / "run" / "checkpoints") in str(info.value)
    saved_step = ckpt.read_trainer_state(latest)["step"]
    assert f"at step {saved_step + 1}" in str(info.value)  # the saved state is the one before the bad step
    assert all(torch.isfinite(p).all() for p in load_consolidated_model_state(latest).values())


def test_skip_policy_skips_then_stops_after_the_configured_count(compose_config, tmp_path: Path, capsys):
    with pytest.raises(NonFiniteLossError, match="too many skipped steps"):
        run(compose_config(*EXPLODING, "trainer.nan_policy=skip", "trainer.max_nan_skips=2"), tmp_path / "run")
    assert capsys.readouterr().err.count("step skipped") == 2


def tiny_training_state(value: float):
    model = torch.nn.Linear(3, 2)
    torch.nn.init.constant_(model.weight, value)
    optimizer = torch.optim.AdamW(model.parameters())
    return model, optimizer


def test_crash_mid_save_leaves_the_previous_checkpoint_as_latest(tmp_path: Path, monkeypatch):
    manager = ckpt.CheckpointManager(tmp_path / "checkpoints")
    model, optimizer = tiny_training_state(1.0)
    first = manager.save(1, model, optimizer, {"step": 1, "world_size": 1})

    real_save = dcp.save

    def crash_midway(state, *, checkpoint_id, **kwargs):
        real_save({"model": state["model"]}, checkpoint_id=checkpoint_id, **kwargs)  # some shards hit the disk
        raise OSError("disk full")

    monkeypatch.setattr(dcp, "save", crash_midway)
    model, optimizer = tiny_training_state(0.0)
    with pytest.raises(ckpt.CheckpointSaveError, match="save of step 2 failed .*disk full.*'latest' still names "
                                                       "step-000001"):
        manager.save(2, model, optimizer, {"step": 2, "world_size": 1})
    monkeypatch.undo()

    assert ckpt.resolve_checkpoint("auto", tmp_path / "checkpoints") == first
    assert not (tmp_path / "checkpoints" / "step-000002").exists()  # the half-written folder is removed
    restored, restored_optimizer = tiny_training_state(5.0)
    assert ckpt.CheckpointManager.load(first, restored, restored_optimizer)["step"] == 1
    assert torch.equal(restored.weight, torch.ones(2, 3))

    manager.save(3, model, optimizer, {"step": 3, "world_size": 1})  # the next good save removes the leftover
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*")) == ["step-000001", "step-000003"]


def test_only_the_newest_checkpoints_are_kept(tmp_path: Path):
    manager = ckpt.CheckpointManager(tmp_path, keep_latest=2)
    model, optimizer = tiny_training_state(1.0)
    for step in range(1, 5):
        manager.save(step, model, optimizer, {"step": step, "world_size": 1})
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-000003", "step-000004"]
    assert (tmp_path / ckpt.LATEST).read_text().strip() == "step-000004"
