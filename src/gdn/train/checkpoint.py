"""Checkpoints with torch.distributed.checkpoint (DCP): sharded model + optimizer, one folder per step.

    checkpoints/
      latest              text "step-000008": written (temp file + atomic rename) only after step-000008 is complete
      step-000008/
        .metadata, *.distcp   DCP: {"model": ..., "optim": ...}; every rank writes its own shards
        trainer.json          step, tokens seen, data position, batch geometry, world size, MLflow run id (rank 0)
        rng-rank{r}.pt        each rank's Python / NumPy / torch (/ CUDA) RNG states
        COMPLETE              the record of every file above (size, CRC-32; gdn.train.checkpoint_record), written
                              once every rank's part is on disk, just before `latest` moves

A crash mid-save leaves a step folder without COMPLETE and without `latest` pointing at it: the previous checkpoint
stays the one resumed from, and the next complete save deletes the leftover. A write error (a full disk) raises
CheckpointSaveError on every rank after removing the half-written folder; `latest` is unchanged. Loading checks the
record first: resume=auto passes over damaged checkpoints to the newest intact one (ResumePoint.skipped says which
and why). One process uses the same manager (DCP without a process group). DCP reshards on load, so a checkpoint
loads into any world size; Trainer.load says what else carries over.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import shutil
import warnings
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from gdn.train import distributed as dist_utils
from gdn.train.checkpoint_record import (COMPLETE, DamagedCheckpointError, check_checkpoint, checkpoint_problems,
                                         describe, file_records, marker_text)

LATEST = "latest"
TRAINER_STATE = "trainer.json"
STEP_PREFIX = "step-"
DCP_METADATA = ".metadata"
WRITE_ERRORS = (OSError, CheckpointException)  # DCP wraps its writers' errors in CheckpointException


class CheckpointSaveError(RuntimeError):
    """A save failed on some rank (e.g. the disk is full); its folder is removed, `latest` still names the previous
    checkpoint. Raised on every rank alike."""

    def __init__(self, step: int, reason: str, latest: Path | None):
        self.step, self.reason, self.latest = step, reason, latest
        kept = f"'{LATEST}' still names {latest.name}" if latest else "no checkpoint was saved before"
        super().__init__(f"checkpoint save of step {step} failed ({reason}); {kept}")


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


def step_of(path: Path) -> int:
    """The step of a step-NNNNNN folder name (-1 for other names)."""
    digits = path.name[len(STEP_PREFIX):]
    return int(digits) if path.name.startswith(STEP_PREFIX) and digits.isdigit() else -1


def looks_like_checkpoint(path: Path) -> bool:
    """A folder a save wrote into (intact or not), as opposed to a wrong path."""
    return path.is_dir() and any((path / name).exists() for name in (COMPLETE, TRAINER_STATE, DCP_METADATA))


@dataclass
class ResumePoint:
    path: Path | None  # the checkpoint to load; None: a fresh run
    skipped: list[str] = field(default_factory=list)  # "step-000020 (what is wrong)": damaged ones passed over


def resume_point(resume: str | None, run_checkpoints: Path) -> ResumePoint:
    """`resume`: None (fresh run), "auto" (the newest intact checkpoint of this run, if any), or a step folder, or
    a checkpoints/ folder (its latest). An explicit checkpoint must be intact; DamagedCheckpointError (one line)
    otherwise. Collective under a process group (the checksums are shared out over the ranks)."""
    if resume is None:
        return ResumePoint(None)
    if resume == "auto":
        return newest_intact(run_checkpoints)
    return ResumePoint(intact_checkpoint(Path(resume), f"trainer.resume={resume}"))


def intact_checkpoint(path: Path, what: str) -> Path:
    """The step folder `path` names (itself, or the latest of a checkpoints/ folder) once its record checks out:
    FileNotFoundError when it is no checkpoint, DamagedCheckpointError (one line, starting with `what`) when it is
    damaged. Collective under a process group."""
    path = path.expanduser().resolve()
    if (path / LATEST).is_file():
        path = latest_checkpoint(path)
    if not looks_like_checkpoint(path):
        raise FileNotFoundError(
            f"{what}: no checkpoint at {path}; expected a step-NNNNNN folder written by "
            f"gdn-train or a run's checkpoints/ folder holding a '{LATEST}' pointer"
        )
    return check_checkpoint(path, what)


def resolve_checkpoint(resume: str | None, run_checkpoints: Path) -> Path | None:
    """The checkpoint path of resume_point."""
    return resume_point(resume, run_checkpoints).path


def newest_intact(folder: Path) -> ResumePoint:
    """The checkpoint `latest` names if intact, else the newest intact older one. Without a `latest` pointer only
    folders holding a COMPLETE marker count (one without is a first save that never finished: a fresh run)."""
    latest = latest_checkpoint(folder)
    folders = sorted((p for p in folder.glob(f"{STEP_PREFIX}*") if p.is_dir()), key=step_of, reverse=True)
    if latest is not None:
        candidates = [latest] + [p for p in folders if step_of(p) < step_of(latest)]
    else:
        candidates = [p for p in folders if (p / COMPLETE).exists()]
    skipped: list[str] = []
    for path in candidates:
        problems = checkpoint_problems(path)
        if not problems:
            return ResumePoint(path, skipped)
        skipped.append(describe(path, problems))
    if skipped:
        raise DamagedCheckpointError(
            f"trainer.resume=auto: no intact checkpoint in {folder}: {', '.join(skipped)}; resume from another "
            f"run's checkpoint (trainer.resume=PATH) or start afresh in a new run folder")
    return ResumePoint(None)


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
        self.published: Path | None = None  # the last checkpoint this manager completed

    # -- save -------------------------------------------------------------------------------------------------
    def save(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
             trainer_state: dict[str, Any]) -> Path:
        """Write step-{step}/; returns its path. Collective: every rank calls it. A write error on any rank raises
        CheckpointSaveError on every rank (for an asynchronous save: when it is waited for)."""
        self.wait()
        step_dir = self.folder / step_folder_name(step)
        if latest_checkpoint(self.folder) == step_dir:  # saved already (a SIGTERM right after a scheduled save,
            self.published = step_dir                   # a non-finite step right after a resume)
            return step_dir
        self._agree(step_dir, self._attempt(self._make_folder, step_dir)[1] if dist_utils.is_main_process() else None)
        self._agree(step_dir, self._attempt(self._write_own_files, step_dir, trainer_state)[1])
        model_state, optim_state = get_state_dict(model, optimizer)
        state = {"model": model_state, "optim": optim_state}
        with dcp_arguments() as kwargs:
            if self.async_save:
                future, error = self._attempt(dcp.async_save, state, checkpoint_id=str(step_dir),
                                              process_group=self._cpu_group(), **kwargs)
                self._agree(step_dir, error)
                self._pending = (future, step_dir)
            else:
                self._agree(step_dir, self._attempt(dcp.save, state, checkpoint_id=str(step_dir), **kwargs)[1])
                self._publish(step_dir)
        return step_dir

    def wait(self) -> None:
        """Finish a pending asynchronous save and point `latest` at it (CheckpointSaveError if it failed)."""
        if self._pending is None:
            return
        future, step_dir = self._pending
        self._pending = None
        self._agree(step_dir, self._attempt(future.result)[1])  # every rank's shards are on disk, or it failed
        self._publish(step_dir)

    def _make_folder(self, step_dir: Path) -> None:
        if step_dir.exists():  # a leftover of a crashed save of this same step
            shutil.rmtree(step_dir)
        step_dir.mkdir(parents=True)

    @staticmethod
    def _write_own_files(step_dir: Path, trainer_state: dict[str, Any]) -> None:
        torch.save(capture_rng_state(), step_dir / f"rng-rank{dist_utils.rank()}.pt")
        if dist_utils.is_main_process():
            (step_dir / TRAINER_STATE).write_text(json.dumps(trainer_state, indent=1))

    def _publish(self, step_dir: Path) -> None:
        """Record every file (sizes and checksums, shared out over the ranks), write the record as COMPLETE, then
        move `latest`; both renames are atomic, so a reader sees the old checkpoint or the whole new one."""
        dist_utils.barrier()
        files, error = self._attempt(file_records, step_dir)
        self._agree(step_dir, error)
        main = dist_utils.is_main_process()
        self._agree(step_dir, self._attempt(self._write_marker_and_latest, step_dir, files)[1] if main else None)
        self.published = step_dir

    def _write_marker_and_latest(self, step_dir: Path, files: dict[str, dict[str, Any]]) -> None:
        write_text_atomic(step_dir / COMPLETE, marker_text(files))
        write_text_atomic(self.folder / LATEST, step_dir.name + "\n")
        self._prune()

    @staticmethod
    def _attempt(fn, *args, **kwargs) -> tuple[Any, str | None]:
        """(fn's result, None), or (None, the text of the write error it raised); other errors propagate."""
        try:
            return fn(*args, **kwargs), None
        except WRITE_ERRORS as error:
            return None, write_error_text(error)

    def _agree(self, step_dir: Path, error: str | None) -> None:
        """Collective: when any rank's part failed, remove the folder and raise CheckpointSaveError everywhere."""
        if not dist_utils.any_rank(error is not None, _flag_device()):
            return
        reasons = [reason for reason in dist_utils.gather_objects(error) if reason is not None]
        if dist_utils.is_main_process():
            shutil.rmtree(step_dir, ignore_errors=True)
        dist_utils.barrier()
        raise CheckpointSaveError(step_of(step_dir), "; ".join(dict.fromkeys(reasons)), latest_checkpoint(self.folder))

    def _prune(self) -> None:
        """Delete all but the keep_latest newest complete step folders, and incomplete ones (left by a crashed
        save: no save is in flight while this runs)."""
        folders = sorted(p for p in self.folder.glob(f"{STEP_PREFIX}*") if p.is_dir())
        complete = [p for p in folders if (p / COMPLETE).exists()]
        stale = [p for p in folders if not (p / COMPLETE).exists()] + complete[: -self.keep_latest]
        for path in stale:
            shutil.rmtree(path, ignore_errors=True)

    def _cpu_group(self):
        """A gloo group of its own for the background save's collectives; None for one process. Not the default
        group, even where that has gloo: collectives that two threads issue on one group run in whatever order
        each rank's threads reach them, and a rank whose training thread entered an all_reduce while another
        rank's save thread entered an all_gather hangs for good (seen with gloo in the two-process tests)."""
        if not dist.is_initialized() or dist.get_world_size() == 1:
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


def write_error_text(error: BaseException) -> str:
    """One line for a write error; DCP's CheckpointException carries each failing rank's exception."""
    if isinstance(error, CheckpointException):
        return "; ".join(f"rank {rank}: {write_error_text(exc)}" for rank, (exc, _) in error.failures.items())
    if isinstance(error, OSError) and error.errno is not None:
        return f"{errno.errorcode.get(error.errno, error.errno)}: {error}"
    return f"{type(error).__name__}: {error}"


def _flag_device() -> torch.device:
    """Where a failure flag is all-reduced: the CPU when the group has gloo for CPU tensors, else this GPU."""
    if not dist.is_initialized() or "gloo" in dist.get_backend():
        return torch.device("cpu")
    return torch.device("cuda", torch.cuda.current_device())
