"""The record that ties a sweep's jobs to its MLflow parent run.

The Hydra callback writes it to `<hydra.sweep.dir>/mlflow_parent.json` when the multirun starts; every job, in
this process or another one (joblib, Slurm tasks on a shared file system), reads it from the same sweep folder.
A file rather than an environment variable, so that any launcher that shares the output folder works.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from gdn.dashboard.run_names import run_name

RECORD_NAME = "mlflow_parent.json"


@dataclass(frozen=True)
class SweepParent:
    run_id: str
    experiment_id: str
    tracking_uri: str
    sweep_id: str
    sweep_name: str
    name_keys: tuple[str, ...] = ()  # the override keys that differ between the jobs: they name each child run

    def child_tags(self) -> dict[str, str]:
        return {"sweep_id": self.sweep_id, "sweep_name": self.sweep_name}

    def child_run_name(self, architecture: str, overrides: list[str]) -> str:
        """The job's variant: "gdn seed=1" (see gdn.dashboard.run_names)."""
        return run_name(architecture, overrides, list(self.name_keys))

    def write(self, sweep_dir: Path) -> Path:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        path = sweep_dir / RECORD_NAME
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def read(cls, sweep_dir: Path) -> SweepParent | None:
        path = sweep_dir / RECORD_NAME
        if not path.is_file():
            return None
        record = json.loads(path.read_text())
        return cls(**{**record, "name_keys": tuple(record.get("name_keys", ()))})


def current_sweep_parent() -> SweepParent | None:
    """The parent of the Hydra job running now: None for a single run, outside Hydra, or when the sweep started
    without tracking."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    return SweepParent.read(Path(hydra_cfg.sweep.dir))
