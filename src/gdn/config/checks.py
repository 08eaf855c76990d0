"""Checks of values that the schema's types cannot express, made on the composed config before anything is built.

Each failing check is one line naming the key, the value and the fix (ConfigValueError). gdn-train makes them in a
Hydra callback before the run folder or an MLflow run exists (conf/train.yaml registers ConfigCheckCallback), and
again in `run` (for each job of a multirun and for callers that skip Hydra).
"""
from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

GDN_MAX_K, GDN_MAX_V = 256, 512  # the Triton GDN kernels' head-size limits (gdn.kernels.gated_delta._common)
ATTENTION_MIXERS = ("attn", "swa")


class ConfigValueError(ValueError):
    """A config value that cannot work; the message is the one line to print."""


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigValueError(message)


def _positive(key: str, value: Any) -> None:
    _require(isinstance(value, (int, float)) and value > 0, f"{key}={value} must be positive: set {key} to a value > 0")


def check_known_keys(node: DictConfig, prefix: str) -> None:
    """Keys a `+key=value` override added to a node typed by a schema (Hydra lets `+` add them): the schema's
    fields are all its target takes."""
    schema = OmegaConf.get_type(node)
    if not dataclasses.is_dataclass(schema):
        return
    fields = [field.name for field in dataclasses.fields(schema)]
    for key in node.keys():
        _require(key in fields, f"{prefix}{key} is not a key of {schema.__name__}: use one of {', '.join(fields)}")
        if isinstance(node[key], DictConfig):
            check_known_keys(node[key], f"{prefix}{key}.")


def env_world_size() -> int:
    """The number of ranks of the launch (torchrun's WORLD_SIZE, Slurm's SLURM_NTASKS), 1 without one."""
    return int(os.environ.get("WORLD_SIZE", os.environ.get("SLURM_NTASKS", "1")))


def runs_on_gpu(device: str) -> bool:
    if device == "auto":
        import torch

        return torch.cuda.is_available()
    return device.startswith("cuda")


def check_model(model: DictConfig, seq_len: int | None, gpu: bool) -> None:
    for key in ("d_model", "n_layers"):
        _positive(f"model.{key}", model[key])
    layers = list(model.layers)
    _require(bool(layers) and model.n_layers % len(layers) == 0,
             f"model.n_layers={model.n_layers} must be a multiple of the pattern length {len(layers)} "
             f"(model.layers={layers}): set model.n_layers to a multiple of {max(len(layers), 1)}")
    for name in dict.fromkeys(layers):
        mixer = model.mixers.get(name) or {}
        if "_target_" in mixer:
            continue  # a user's own mixer: its constructor checks its arguments
        check_mixer(name, mixer, model.d_model, seq_len, gpu)


def check_mixer(name: str, mixer: DictConfig, d_model: int, seq_len: int | None, gpu: bool) -> None:
    key = f"model.mixers.{name}"
    for size in ("num_heads", "head_dim", "d_state", "headdim", "window", "chunk_size"):
        if mixer.get(size) is not None:
            _positive(f"{key}.{size}", mixer[size])
    if name in ATTENTION_MIXERS and mixer.get("head_dim") is None and mixer.get("num_heads"):
        _require(d_model % mixer.num_heads == 0, f"{key}.num_heads={mixer.num_heads} must divide model.d_model="
                 f"{d_model}: choose a divisor of {d_model}, or set {key}.head_dim")
    if name == "swa" and seq_len is not None and mixer.get("window") is not None:
        _require(mixer.window <= seq_len, f"{key}.window={mixer.window} is longer than data.seq_len={seq_len}: "
                 f"set {key}.window <= {seq_len} (or use the attn mixer for full attention)")
    if name == "mamba2" and mixer.get("headdim"):
        d_inner = mixer.get("expand", 2) * d_model
        _require(d_inner % mixer.headdim == 0, f"{key}.headdim={mixer.headdim} must divide expand * d_model = "
                 f"{d_inner}: choose a divisor of {d_inner}")
    if name == "gdn" and mixer.get("head_dim") and (mixer.get("backend") == "triton"
                                                    or (mixer.get("backend", "auto") == "auto" and gpu)):
        value_dim = int(mixer.head_dim * mixer.get("expand_v", 2))
        _require(mixer.head_dim <= GDN_MAX_K, f"{key}.head_dim={mixer.head_dim} exceeds the GPU kernels' K <= "
                 f"{GDN_MAX_K}: use more heads of at most {GDN_MAX_K}, or {key}.backend=torch")
        _require(value_dim <= GDN_MAX_V, f"{key}.head_dim * expand_v = {value_dim} exceeds the GPU kernels' V <= "
                 f"{GDN_MAX_V}: lower {key}.expand_v or head_dim, or {key}.backend=torch")


def check_config(cfg: DictConfig, world_size: int | None = None) -> None:
    """Raise ConfigValueError (one line) for the first value of a composed train config that cannot work."""
    world_size = env_world_size() if world_size is None else world_size
    for group in ("trainer", "data", "optim", "sched", "logging", "model"):
        check_known_keys(cfg[group], f"{group}.")
    trainer, data = cfg.trainer, cfg.data
    for key in ("max_steps", "grad_accum", "log_every", "eval_every", "checkpoint_every", "keep_checkpoints"):
        _positive(f"trainer.{key}", trainer[key])
    for key in ("seq_len", "batch_size"):
        if data.get(key) is not None:
            _positive(f"data.{key}", data[key])
    vocab_size = data.get("vocab_size")
    if data.get("_target_") == "gdn.data.TokenData":  # a floor under the prepared tokenizer's vocabulary: 0 is none
        _require(isinstance(vocab_size, int) and vocab_size >= 0,
                 f"data.vocab_size={vocab_size} must be >= 0 (0: the prepared tokenizer's vocabulary)")
    elif vocab_size is not None:
        _positive("data.vocab_size", vocab_size)
    batch_size = data.get("batch_size")
    if batch_size is not None and world_size > 1:
        _require(batch_size % world_size == 0, f"data.batch_size={batch_size} is not divisible by the {world_size} "
                 f"ranks: set data.batch_size to a multiple of {world_size}")
    lr = cfg.optim.optimizer.get("lr")
    if lr is not None:
        _positive("optim.optimizer.lr", lr)
    if cfg.model.get("_target_") == "gdn.models.LanguageModel":
        check_model(cfg.model, data.get("seq_len"), runs_on_gpu(str(trainer.device)))


def exit_on_bad_value(cfg: DictConfig) -> None:
    """check_config, printing its line and exiting with status 2 (no traceback)."""
    try:
        check_config(cfg)
    except ConfigValueError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


class ConfigCheckCallback(Callback):
    """Runs the checks before Hydra creates the run folder (a single run) or the sweep's parent run (a multirun:
    the base config; each job is checked again in `run`)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        exit_on_bad_value(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        exit_on_bad_value(config)
