"""Checkpoints with torch.distributed.checkpoint (DCP): sharded model + optimizer, one folder per step.

    checkpoints/
      latest              text "step-000008": written (temp file + atomic rename) only after step-000008 is complete
      step-000008/
        .metadata, *.distcp   DCP: {"model": ..., "optim": ...}; every rank writes its own shards
        trainer.json          step, tokens seen, data position, batch geometry, world size, MLflow run id (rank 0)
        rng-rank{r}.pt        each rank's Python / NumPy / torch (/ CUDA) RNG states
        COMPLETE              written once every rank's part is on disk, just before `latest` moves

A crash mid-save leaves a step folder without COMPLETE and without `latest` pointing at it: the previous checkpoint
stays the one resumed from, and the next complete save deletes the leftover. One process uses the same manager
(DCP without a process group). DCP reshards on load, so a checkpoint loads into any world size; Trainer.load says
what else carries over.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import warnings
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from gdn.train import distributed as dist_utils

LATEST = "latest"
TRAINER_STATE = "trainer.json"
STEP_PREFIX = "step-"
COMPLETE = "COMPLETE"


@contextlib.contextmanager
def dcp_arguments():
    """DCP's keyword arguments for this process: no_dist=True without a process group (DCP then warns on every
    call that it assumes one process, which is the intent here, so that warning is silenced)."""
    if dist.is_initialized():
        yield {}
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield {"no_dist": True}


def step_folder_name(step: int) -> str:
    return f"{STEP_PREFIX}{step:06d}"


def capture_rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def write_text_atomic(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder, fsync, then rename: readers see the old or the new text."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def latest_checkpoint(folder: Path) -> Path | None:
    """The step folder `latest` points at, or None when there is no complete checkpoint."""
    pointer = folder / LATEST
    if not pointer.is_file():
        return None
    return folder / pointer.read_text().strip()


def resolve_checkpoint(resume: str | None, run_checkpoints: Path) -> Path | None:
    """`resume`: None (fresh run), "auto" (this run's latest checkpoint if any), or a step folder, or a
    checkpoints/ folder (its latest)."""
    if resume is None:
        return None
    if resume == "auto":
        return latest_checkpoint(run_checkpoints)
    path = Path(resume).expanduser().resolve()
    if (path / LATEST).is_file():
        path = latest_checkpoint(path)
    if not (path / TRAINER_STATE).is_file():
        raise FileNotFoundError(
            f"trainer.resume={resume!r}: no checkpoint at {path}; expected a step-NNNNNN folder written by "
            f"gdn-train or a run's checkpoints/ folder holding a '{LATEST}' pointer"
        )
    return path


def read_trainer_state(step_dir: Path) -> dict[str, Any]:
    return json.loads((step_dir / TRAINER_STATE).read_text())


class CheckpointManager:
    """Save / load the whole training state under `folder`, keeping the `keep_latest` newest checkpoints.

    async_save: DCP copies the state to CPU memory, then writes it in a background thread while training goes on;
    the `latest` pointer of an asynchronous save is written when it is waited for (before the next save, and at
    the end of training), so `latest` never names a folder that is still being written.
    """

    def __init__(self, folder: Path, keep_latest: int = 2, async_save: bool = False):
        if keep_latest < 1:
            raise ValueError(f"trainer.keep_checkpoints={keep_latest}: keep at least 1")
        self.folder = folder
        self.keep_latest = keep_latest
        self.async_save = async_save
        self._pending: tuple[Future, Path] | None = None
        self._async_group = None

    # -- save -------------------------------------------------------------------------------------------------
    def save(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
             trainer_state: dict[str, Any]) -> Path:
        """Write step-{step}/; returns its path. Collective: every rank calls it."""
        self.wait()
        step_dir = self.folder / step_folder_name(step)
        if latest_checkpoint(self.folder) == step_dir:
            return step_dir  # this step is saved already (e.g. a SIGTERM right after a scheduled save)
        if dist_utils.is_main_process():
            if step_dir.exists():  # a leftover of a crashed save of this same step
                shutil.rmtree(step_dir)
            step_dir.mkdir(parents=True)
        dist_utils.barrier()
        torch.save(capture_rng_state(), step_dir / f"rng-rank{dist_utils.rank()}.pt")
        if dist_utils.is_main_process():
            (step_dir / TRAINER_STATE).write_text(json.dumps(trainer_state, indent=1))
        model_state, optim_state = get_state_dict(model, optimizer)
        state = {"model": model_state, "optim": optim_state}
        with dcp_arguments() as kwargs:
            if self.async_save:
                future = dcp.async_save(state, checkpoint_id=str(step_dir), process_group=self._cpu_group(), **kwargs)
                self._pending = (future, step_dir)
            else:
                dcp.save(state, checkpoint_id=str(step_dir), **kwargs)
        if not self.async_save:
            self._publish(step_dir)
        return step_dir

    def wait(self) -> None:
        """Finish a pending asynchronous save and point `latest` at it."""
        if self._pending is None:
            return
        future, step_dir = self._pending
        self._pending = None
        future.result()
        dist_utils.barrier()  # every rank's shards are on disk
        self._publish(step_dir)

    def _publish(self, step_dir: Path) -> None:
        dist_utils.barrier()
        if dist_utils.is_main_process():
            (step_dir / COMPLETE).touch()
            write_text_atomic(self.folder / LATEST, step_dir.name + "\n")
            self._prune()
        dist_utils.barrier()

    def _prune(self) -> None:
        """Delete all but the keep_latest newest complete step folders, and incomplete ones (left by a crashed
        save: no save is in flight while this runs)."""
        folders = sorted(p for p in self.folder.glob(f"{STEP_PREFIX}*") if p.is_dir())
        complete = [p for p in folders if (p / COMPLETE).exists()]
        stale = [p for p in folders if not (p / COMPLETE).exists()] + complete[: -self.keep_latest]
        for path in stale:
            shutil.rmtree(path, ignore_errors=True)

    def _cpu_group(self):
        """A gloo group for the background save's collectives (NCCL calls from a side thread would race the
        training stream); None (the default group) when that already has gloo for CPU tensors (gdn's
        "cpu:gloo,cuda:nccl" group, the CPU) or for one process."""
        if not dist.is_initialized() or "gloo" in dist.get_backend():
            return None
        if self._async_group is None:
            self._async_group = dist.new_group(backend="gloo")
        return self._async_group

    # -- load -------------------------------------------------------------------------------------------------
    @staticmethod
    def load(step_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """Load model and optimizer (resharded to this world size) from `step_dir`; return trainer.json, with
        "rng" set to this rank's RNG state when the checkpoint was written at this world size (else None)."""
        model_state, optim_state = get_state_dict(model, optimizer)
        state = {"model": model_state, "optim": optim_state}
        with dcp_arguments() as kwargs:
            dcp.load(state, checkpoint_id=str(step_dir), **kwargs)
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
        trainer_state = read_trainer_state(step_dir)
        rng_file = step_dir / f"rng-rank{dist_utils.rank()}.pt"
        same_world = trainer_state["world_size"] == dist_utils.world_size()
        # weights_only=False: RNG states hold numpy arrays and tuples; only load checkpoints you wrote.
        trainer_state["rng"] = torch.load(rng_file, weights_only=False) if same_world else None
        return trainer_state
