"""What a checkpoint wrote, and whether its folder still holds exactly that.

The COMPLETE marker of a step folder is a JSON record, written last (temp file + atomic rename) once every rank's
files are on disk:

    {"format": 1, "files": {"__0_0.distcp": {"size": 12345, "crc32": "9a3b0c1d"}, ".metadata": {...}, ...}}

Loading checks every recorded file (present, same size, same CRC-32) before trusting the folder. CRC-32 (zlib,
several GB/s) finds truncation and flipped bytes; it is no defence against deliberate tampering. With several
ranks each one reads a share of the files (every world_size-th in name order) and the results are gathered, so the
folder is read once in all. An empty COMPLETE marker is a checkpoint written before gdn kept this record: it is
trusted as before.
"""
from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import torch.distributed as dist

from gdn.train.distributed import gather_objects

COMPLETE = "COMPLETE"
FORMAT = 1
CHUNK_BYTES = 8 << 20


class DamagedCheckpointError(ValueError):
    """A checkpoint folder does not hold what its save recorded (or was never completed); one line says what."""


def crc32_of(path: Path) -> str:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            crc = zlib.crc32(chunk, crc)
    return f"{crc:08x}"


def recorded_files(step_dir: Path) -> list[str]:
    """The files a save wrote: everything in the folder but the marker and temporary files."""
    return sorted(p.name for p in step_dir.iterdir()
                  if p.is_file() and p.name != COMPLETE and ".tmp" not in p.name)


def _share(names: list[str]) -> list[str]:
    """This rank's share of the files: every world_size-th, from index rank."""
    if not dist.is_initialized():
        return names
    return names[dist.get_rank()::dist.get_world_size()]


def file_records(step_dir: Path) -> dict[str, dict[str, Any]]:
    """{name: {"size", "crc32"}} of every file in the folder. Collective under a process group: a read error on
    any rank raises OSError on every rank (after the gather, so no rank is left waiting in it)."""
    try:
        mine: dict[str, Any] | str = {name: {"size": (step_dir / name).stat().st_size,
                                             "crc32": crc32_of(step_dir / name)}
                                      for name in _share(recorded_files(step_dir))}
    except OSError as error:
        mine = f"recording the files of {step_dir.name}: {error}"
    parts = gather_objects(mine)
    errors = [part for part in parts if isinstance(part, str)]
    if errors:
        raise OSError("; ".join(errors))
    return {name: record for part in parts for name, record in part.items()}


def marker_text(files: dict[str, dict[str, Any]]) -> str:
    return json.dumps({"format": FORMAT, "files": files}, indent=1, sort_keys=True) + "\n"


def _read_marker(step_dir: Path) -> tuple[dict[str, dict[str, Any]] | None, str | None]:
    """(recorded files or None for a marker from before the record, the problem or None)."""
    marker = step_dir / COMPLETE
    if not marker.is_file():
        return None, f"no {COMPLETE} marker (the save never finished)"
    text = marker.read_text()
    if not text.strip():
        return None, None
    try:
        record = json.loads(text)
        return dict(record["files"]), None
    except (ValueError, KeyError, TypeError):
        return None, f"{COMPLETE} marker unreadable (not the JSON record a save writes)"


def _size_problem(step_dir: Path, name: str, recorded_size: int) -> str | None:
    path = step_dir / name
    if not path.is_file():
        return f"{name} missing"
    size = path.stat().st_size
    if size != recorded_size:
        return f"{name} is {size} bytes, {recorded_size} recorded" + (" (truncated)" if size < recorded_size else "")
    return None


def _crc_problem(step_dir: Path, name: str, recorded_crc: str) -> str | None:
    try:
        crc = crc32_of(step_dir / name)
    except OSError as error:
        return f"{name} unreadable ({error})"
    return None if crc == recorded_crc else f"{name} has CRC-32 {crc}, {recorded_crc} recorded (bytes changed)"


def checkpoint_problems(step_dir: Path) -> list[str]:
    """What is wrong with a step folder ([] = intact), in file order. Collective under a process group (every
    rank gets the same list): every rank checks presence and sizes, each its share of the checksums."""
    if not step_dir.is_dir():
        return [f"folder {step_dir.name} missing"]
    files, problem = _read_marker(step_dir)
    if problem:
        return [problem]
    if files is None:
        return []  # a marker from before the record: trusted as before
    names = sorted(files)
    found = {name: p for name in names if (p := _size_problem(step_dir, name, files[name]["size"]))}
    mine = {name: p for name in _share(names)
            if name not in found and (p := _crc_problem(step_dir, name, files[name]["crc32"]))}
    for part in gather_objects(mine):
        found.update(part)
    return [found[name] for name in names if name in found]


def describe(step_dir: Path, problems: list[str]) -> str:
    return f"{step_dir.name} ({'; '.join(problems)})"


def check_checkpoint(step_dir: Path, what: str) -> Path:
    """`step_dir` when intact, else DamagedCheckpointError naming it and what is wrong; `what` starts the message
    (e.g. "trainer.resume=/path")."""
    problems = checkpoint_problems(step_dir)
    if problems:
        raise DamagedCheckpointError(
            f"{what}: checkpoint {describe(step_dir, problems)} is damaged; pass an older step folder of "
            f"{step_dir.parent}")
    return step_dir
