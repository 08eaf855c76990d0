"""Single-process checkpoints: written to a temporary name and renamed, so a crash mid-save never costs the previous one.

A checkpoint holds everything a bit-exact resume needs: model, optimizer, the step (the schedule is a function of
it), the data position (data modules are random access by batch index), tokens seen, every RNG, and the MLflow run
id so the resumed run continues the same MLflow run.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

LATEST = "latest.pt"


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


def save_atomic(payload: dict[str, Any], path: Path) -> Path:
    """torch.save to `path` via a temporary file in the same folder, fsync'ed, then an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save_checkpoint(folder: Path, step: int, payload: dict[str, Any], keep: int = 2) -> Path:
    """Write step_{step:08d}.pt, then latest.pt (each by atomic rename; latest is a copy, not a link, so the folder
    can be moved or synced as plain files), then delete all but the `keep` newest step files."""
    path = save_atomic(payload, folder / f"step_{step:08d}.pt")
    save_atomic(payload, folder / LATEST)
    for old in sorted(folder.glob("step_*.pt"))[:-keep]:
        old.unlink()
    return path


def resolve_checkpoint(resume: str | None, run_checkpoints: Path) -> Path | None:
    """`resume`: None (fresh run), "auto" (this run's latest checkpoint if any), or a checkpoint file or folder."""
    if resume is None:
        return None
    if resume == "auto":
        latest = run_checkpoints / LATEST
        return latest if latest.exists() else None
    path = Path(resume).expanduser().resolve()
    if path.is_dir():
        path = path / LATEST
    if not path.is_file():
        raise FileNotFoundError(
            f"trainer.resume={resume!r}: no checkpoint at {path}; expected a .pt file written by gdn-train "
            f"or a run's checkpoints/ folder holding {LATEST}"
        )
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    # weights_only=False: the payload holds RNG states (numpy arrays, tuples) next to tensors; only load your own.
    return torch.load(path, map_location="cpu", weights_only=False)
