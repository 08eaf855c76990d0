"""Structured configs: the schema of each config group, stored in Hydra's ConfigStore.

Each group file lists its schema first in its defaults list (`defaults: [schema, _self_]` in conf/trainer/,
`schema_mqar` in conf/data/mqar.yaml, ...), so Hydra types every key at composition: `trainer.max_steps=abc`
and unknown keys fail there, with Hydra's message naming the key and the expected type. A schema holds the keys
of its file and nothing more (what `instantiate` passes to the `_target_` is exactly what the YAML has); MISSING
marks keys the YAML must set. The model's `mixers` stay open (a mixer's keyword arguments, or a `_target_`).
Checks of values that a type cannot express: gdn.config.checks.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

SCHEMA = "schema"  # the name of a group's schema entry (gdn.models.config_files skips it)


@dataclass
class ParallelConfig:
    dp_replicate: int = MISSING
    dp_shard: int = MISSING
    param_dtype: str = MISSING
    reduce_dtype: str = MISSING
    reshard_after_forward: bool = MISSING
    activation_checkpointing: str = MISSING
    ac_every: int = MISSING
    compile: Any = MISSING  # auto | true | false


@dataclass
class TrainerConfig:
    max_steps: int = MISSING
    stop_after_steps: Optional[int] = MISSING
    grad_accum: int = MISSING
    grad_clip: Optional[float] = MISSING
    device: str = MISSING
    precision: str = MISSING
    weights_dtype: str = MISSING
    log_every: int = MISSING
    eval_every: int = MISSING
    checkpoint_every: int = MISSING
    keep_checkpoints: int = MISSING
    async_checkpoint: bool = MISSING
    export_safetensors: bool = MISSING
    resume: Optional[str] = MISSING
    nan_policy: str = MISSING
    on_save_error: str = MISSING
    max_nan_skips: int = MISSING
    progress_bar: bool = MISSING
    loss_chunk_tokens: Optional[int] = MISSING
    system_metrics: bool = MISSING
    parallel: ParallelConfig = field(default_factory=ParallelConfig)


@dataclass
class MQARDataConfig:
    _target_: str = "gdn.data.MQARData"
    vocab_size: int = MISSING
    seq_len: int = MISSING
    num_kv_pairs: int = MISSING
    min_train_kv_pairs: Optional[int] = MISSING
    batch_size: int = MISSING
    seed: int = MISSING
    num_eval_examples: int = MISSING


@dataclass
class TokenWindowsConfig:
    """The keys of both text groups: data=text is data=tokens over a folder prepared on first use."""
    path: str = MISSING
    tokenizer: Optional[str] = MISSING
    vocab_size: int = MISSING
    seq_len: int = MISSING
    batch_size: int = MISSING
    seed: int = MISSING
    eval_sequences: Optional[int] = MISSING


@dataclass
class TextDataConfig(TokenWindowsConfig):
    _target_: str = "gdn.data.TextData"
    val_docs: int = MISSING
    cache_dir: str = MISSING
    text_field: str = MISSING
    num_proc: int = MISSING


@dataclass
class TokensDataConfig(TokenWindowsConfig):
    _target_: str = "gdn.data.TokenData"
    verify: bool = MISSING


@dataclass
class AdamWConfig:
    _target_: str = "torch.optim.AdamW"
    _partial_: bool = True
    lr: float = MISSING
    betas: List[float] = MISSING
    eps: float = MISSING
    weight_decay: float = MISSING
    fused: Optional[bool] = None


@dataclass
class OptimConfig:
    optimizer: AdamWConfig = field(default_factory=AdamWConfig)
    decay_embeddings: bool = MISSING


@dataclass
class WarmupCosineConfig:
    _target_: str = "gdn.train.schedule.WarmupCosine"
    warmup_steps: int = MISSING
    min_lr_ratio: float = MISSING


@dataclass
class WarmupConstantConfig:
    _target_: str = "gdn.train.schedule.WarmupConstant"
    warmup_steps: int = MISSING


@dataclass
class LoggingConfig:
    enabled: bool = MISSING
    tracking_uri: Optional[str] = MISSING
    experiment_name: str = MISSING
    run_name: Optional[str] = MISSING
    sweep_report: bool = MISSING


@dataclass
class ModelConfig:
    _target_: str = "gdn.models.LanguageModel"
    vocab_size: int = MISSING
    d_model: int = MISSING
    n_layers: int = MISSING
    layers: List[str] = MISSING
    mixers: Dict[str, Any] = MISSING
    mlp: bool = MISSING
    mlp_hidden: Optional[int] = MISSING
    tie_embeddings: bool = MISSING
    norm_eps: float = MISSING
    init_std: float = MISSING


SCHEMAS = {
    ("trainer", SCHEMA): TrainerConfig,
    ("data", f"{SCHEMA}_mqar"): MQARDataConfig,
    ("data", f"{SCHEMA}_text"): TextDataConfig,
    ("data", f"{SCHEMA}_tokens"): TokensDataConfig,
    ("optim", SCHEMA): OptimConfig,
    ("sched", f"{SCHEMA}_cosine"): WarmupCosineConfig,
    ("sched", f"{SCHEMA}_constant"): WarmupConstantConfig,
    ("logging", SCHEMA): LoggingConfig,
    ("model", SCHEMA): ModelConfig,
}


def register_schemas() -> None:
    store = ConfigStore.instance()
    for (group, name), node in SCHEMAS.items():
        store.store(group=group, name=name, node=node)
