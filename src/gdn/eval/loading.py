"""Everything evaluation needs from a finished (or running) training run: model, resolved config, tokenizer.

A run folder (`outputs/runs/<date>/<time>/`) holds what gdn-train wrote:

    resolved_config.yaml      the fully resolved training config (written by write_run_files at the start)
    tokenizer.json            text runs: a copy of the tokenizer the data module used
    checkpoints/              the trainer's checkpoints (read_checkpoint is the one place that knows the format)
    model.safetensors         optional: consolidated weights (trainer.export_safetensors)

`load_run(path)` takes the run folder, its checkpoints/ folder, one checkpoint, or a .safetensors file;
`find_runs` lists the runs of a multirun folder.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

RESOLVED_CONFIG = "resolved_config.yaml"
TOKENIZER_FILE = "tokenizer.json"
CHECKPOINTS = "checkpoints"
TEXT_DATA_TARGETS = ("gdn.data.TextData", "gdn.data.TokenData")  # the data modules of text runs


@dataclass
class CheckpointInfo:
    path: Path
    step: int | None = None
    mlflow_run_id: str | None = None


@dataclass
class LoadedRun:
    model: torch.nn.Module  # on `device`, in eval mode
    config: DictConfig  # the training run's resolved config
    run_dir: Path
    checkpoint: CheckpointInfo
    tokenizer: Any | None  # a HF tokenizers Tokenizer for text runs; None for MQAR's toy vocabulary

    @property
    def is_text(self) -> bool:
        return self.config.data.get("_target_") in TEXT_DATA_TARGETS


def write_run_files(run_dir: Path, cfg: DictConfig, data: Any) -> None:
    """What load_run needs later and the run folder would otherwise lack: the resolved config (Hydra's .hydra/
    copy keeps interpolations such as paths relative to the launch directory) and the text tokenizer."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RESOLVED_CONFIG).write_text(OmegaConf.to_yaml(cfg, resolve=True))
    tokenizer_path = getattr(data, "tokenizer_path", None)
    if tokenizer_path is not None and Path(tokenizer_path).resolve() != (run_dir / TOKENIZER_FILE).resolve():
        shutil.copyfile(tokenizer_path, run_dir / TOKENIZER_FILE)


def load_run(path: str | Path, device: str | torch.device = "cpu") -> LoadedRun:
    run_dir, checkpoint_path = locate(Path(path).expanduser().resolve())
    config = load_run_config(run_dir)
    weights, info = read_checkpoint(checkpoint_path)
    model = build_model(config, weights).to(device).eval()
    return LoadedRun(model, config, run_dir, info, load_run_tokenizer(run_dir, config))


def find_runs(path: str | Path) -> list[Path]:
    """The job folders of a multirun folder (outputs/multiruns/<date>/<time>: one run per job, in job order), or
    [path] for anything else."""
    path = Path(path).expanduser().resolve()
    if path.is_dir() and not (path / CHECKPOINTS).is_dir() and path.name != CHECKPOINTS:
        jobs = [config.parent for config in path.glob(f"*/{RESOLVED_CONFIG}")]
        if jobs:
            return sorted(jobs, key=lambda job: (not job.name.isdigit(), int(job.name) if job.name.isdigit() else 0,
                                                 job.name))
    return [path]


def locate(path: Path) -> tuple[Path, Path]:
    """(run folder, checkpoint) for a run folder, a checkpoints/ folder, a checkpoint, or a .safetensors file."""
    if not path.exists():
        raise FileNotFoundError(f"no run or checkpoint at {path}: pass a run folder (outputs/runs/<date>/<time>), "
                                f"its checkpoints/ folder, one checkpoint, or a .safetensors file")
    if path.is_dir() and (path / CHECKPOINTS).is_dir():
        return path, _latest_in(path / CHECKPOINTS)
    if path.is_dir() and path.name == CHECKPOINTS:
        return path.parent, _latest_in(path)
    if path.suffix == ".safetensors":
        return path.parent, path
    # one checkpoint (a step folder or a .pt file) inside <run>/checkpoints/
    return (path.parent.parent if path.parent.name == CHECKPOINTS else path.parent), path


def _latest_in(folder: Path) -> Path:
    from gdn.train.checkpoint import LATEST, latest_checkpoint

    if (folder / "latest.pt").is_file():  # single-file checkpoints of gdn-train before DCP
        return folder / "latest.pt"
    latest = latest_checkpoint(folder)
    if latest is None:
        raise FileNotFoundError(f"{folder} holds no complete checkpoint (no '{LATEST}' pointer): the run saved none "
                                f"yet; gdn-train writes one every trainer.checkpoint_every steps and at the end")
    return latest


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], CheckpointInfo]:
    """The model weights (full, on the CPU) and the step / MLflow run id of one checkpoint. The only function that
    knows checkpoint formats: DCP step folders (gdn.train.checkpoint), .safetensors exports, and .pt files."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path)), CheckpointInfo(path)
    if path.suffix == ".pt":
        # weights_only=False: the payload holds RNG states (numpy arrays, tuples); only load your own checkpoints.
        payload = torch.load(path, map_location="cpu", weights_only=False)
        return payload["model"], CheckpointInfo(path, payload.get("step"), payload.get("mlflow_run_id"))
    from gdn.train.checkpoint import TRAINER_STATE, read_trainer_state
    from gdn.train.export import load_consolidated_model_state

    if not (path / TRAINER_STATE).is_file():
        raise FileNotFoundError(f"{path} is not a checkpoint: expected a step folder holding {TRAINER_STATE}, "
                                f"a .pt or a .safetensors file")
    state = read_trainer_state(path)
    return load_consolidated_model_state(path), CheckpointInfo(path, state.get("step"), state.get("mlflow_run_id"))


def load_run_config(run_dir: Path) -> DictConfig:
    resolved = run_dir / RESOLVED_CONFIG
    if resolved.is_file():
        return OmegaConf.load(resolved)
    hydra_copy = run_dir / ".hydra" / "config.yaml"
    if hydra_copy.is_file():  # runs from before write_run_files: resolve Hydra's copy (paths relative to the cwd)
        from gdn.train.main import register_resolvers

        register_resolvers()
        config = OmegaConf.load(hydra_copy)
        OmegaConf.resolve(config)
        return config
    raise FileNotFoundError(f"{run_dir} has no {RESOLVED_CONFIG} (nor .hydra/config.yaml): it is not a gdn-train "
                            f"run folder; pass the folder gdn-train printed as 'run dir'")


def build_model(config: DictConfig, weights: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The run's model with its weights. The vocabulary comes from the weights: the data module may round the
    config's vocab_size up (TextData pads to a multiple of 64)."""
    model = instantiate(config.model, vocab_size=weights["embed.weight"].shape[0], _convert_="all")
    model.load_state_dict(weights)
    return model


def load_run_tokenizer(run_dir: Path, config: DictConfig):
    """The text tokenizer of a text run (None for other data): the run's copy, the configured tokenizer.json, or
    the one TextData trained and cached (found by building the data module from its cache)."""
    if config.data.get("_target_") not in TEXT_DATA_TARGETS:
        return None
    from gdn.data.tokenizer import load_tokenizer

    if (run_dir / TOKENIZER_FILE).is_file():
        return load_tokenizer(run_dir / TOKENIZER_FILE)
    if config.data.get("tokenizer"):
        return load_tokenizer(config.data.tokenizer)
    return instantiate(config.data, _convert_="all").tokenizer
