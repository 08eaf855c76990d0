"""Everything evaluation needs from a finished (or running) training run: model, resolved config, tokenizer.

`load_run(path)` takes the run folder, its checkpoints/ folder, one checkpoint, or a .safetensors file (the run
folder's format and its reading: gdn.run_folder).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from gdn.run_folder import TOKENIZER_FILE, CheckpointInfo, load_run_config, locate, read_checkpoint

TEXT_DATA_TARGETS = ("gdn.data.TextData", "gdn.data.TokenData")  # the data modules of text runs


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


def load_run(path: str | Path, device: str | torch.device = "cpu") -> LoadedRun:
    run_dir, checkpoint_path = locate(Path(path).expanduser().resolve())
    config = load_run_config(run_dir)
    weights, info = read_checkpoint(checkpoint_path)
    model = build_model(config, weights).to(device).eval()
    return LoadedRun(model, config, run_dir, info, load_run_tokenizer(run_dir, config))


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
