"""A save that fails mid-write (the disk fills up inside DCP's writer) leaves the previous checkpoint as `latest`,
is logged, and training goes on (the next save succeeds) or stops cleanly (trainer.on_save_error=stop)."""
import contextlib
import errno
import os
from pathlib import Path

import pytest
import torch
from torch.distributed.checkpoint.filesystem import FileSystem

from gdn.train import checkpoint as ckpt
from gdn.train.checkpoint_record import checkpoint_problems
from gdn.train.export import load_consolidated_model_state
from gdn.train.main import run

RUN = ["trainer.max_steps=12", "trainer.checkpoint_every=4", "trainer.eval_every=4"]
ROOM_BYTES = 4096  # what the full disk still takes of a shard


class FillsUp:
    """A write stream that takes ROOM_BYTES, writes what fits of the next write and raises ENOSPC, as a full disk."""

    def __init__(self, stream):
        self.stream, self.written = stream, 0

    def write(self, data) -> int:
        data = memoryview(data).cast("B")
        room = ROOM_BYTES - self.written
        if len(data) > room:
            self.stream.write(data[:room])
            self.written = ROOM_BYTES
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.written += len(data)
        return self.stream.write(data)

    def __getattr__(self, name):
        return getattr(self.stream, name)


@pytest.fixture
def disk_full_for(monkeypatch):
    """disk_full_for(run_dir, "step-000008"): DCP's shard writes into that folder run out of space. Returns a list
    of (folder, what `latest` named, whether the failed folder is still there) for every later shard opened."""
    real = FileSystem.create_stream
    seen: list[tuple[str, str, bool]] = []

    def install(run_dir: Path, failing: str):
        checkpoints = run_dir / "checkpoints"

        @contextlib.contextmanager
        def create_stream(fs, path, mode):
            path = Path(path)
            with real(fs, path, mode) as stream:
                if path.suffix != ".distcp" or "w" not in mode:
                    yield stream
                elif path.parent.name == failing:
                    yield FillsUp(stream)
                else:
                    if (checkpoints / ckpt.LATEST).is_file():
                        seen.append((path.parent.name, (checkpoints / ckpt.LATEST).read_text().strip(),
                                     (checkpoints / failing).exists()))
                    yield stream

        monkeypatch.setattr(FileSystem, "create_stream", create_stream)
        return seen

    return install


@pytest.mark.parametrize("async_save", [False, True], ids=["sync", "async"])
def test_a_save_failing_mid_write_keeps_latest_and_training_goes_on(async_save, compose_config, disk_full_for,
                                                                    tmp_path: Path, capsys):
    overrides = [*RUN, f"trainer.async_checkpoint={str(async_save).lower()}"]
    straight = run(compose_config(*overrides), tmp_path / "straight")
    seen = disk_full_for(tmp_path / "full", "step-000008")
    result = run(compose_config(*overrides), tmp_path / "full")

    assert result.failed_saves == [8]
    err = capsys.readouterr().err
    assert "warning: checkpoint save of step 8 failed (" in err and "No space left on device" in err
    assert "'latest' still names step-000004; training goes on" in err
    # when the step-12 save began, `latest` still named step 4 and the half-written step-8 folder was gone
    assert seen[0] == ("step-000012", "step-000004", False)
    assert result.losses == straight.losses and result.eval_metrics == straight.eval_metrics
    checkpoints = tmp_path / "full" / "checkpoints"
    assert ckpt.latest_checkpoint(checkpoints) == result.checkpoint == checkpoints / "step-000012"
    assert sorted(p.name for p in checkpoints.glob("step-*")) == ["step-000004", "step-000012"]
    assert checkpoint_problems(result.checkpoint) == []
    final, expected = load_consolidated_model_state(result.checkpoint), load_consolidated_model_state(
        straight.checkpoint)
    assert all(torch.equal(final[k], expected[k]) for k in expected)


def test_on_save_error_stop_ends_the_run_with_one_line(compose_config, disk_full_for, tmp_path: Path):
    disk_full_for(tmp_path / "run", "step-000008")
    with pytest.raises(ckpt.CheckpointSaveError) as info:
        run(compose_config(*RUN, "trainer.on_save_error=stop"), tmp_path / "run")
    message = str(info.value)
    assert "\n" not in message and message.startswith("checkpoint save of step 8 failed (")
    assert "No space left on device" in message and message.endswith("'latest' still names step-000004")
    checkpoints = tmp_path / "run" / "checkpoints"
    assert ckpt.latest_checkpoint(checkpoints).name == "step-000004"
    assert sorted(p.name for p in checkpoints.glob("step-*")) == ["step-000004"]


def test_on_save_error_must_be_continue_or_stop(compose_config, tmp_path: Path):
    with pytest.raises(ValueError, match="trainer.on_save_error='retry': choose continue or stop"):
        run(compose_config("trainer.on_save_error=retry"), tmp_path / "run")
