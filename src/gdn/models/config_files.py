"""The model configs of conf/ read without Hydra: `conf/model/NAME.yaml` (with its defaults list of other model
files) merged with `conf/scale/SCALE/NAME.yaml`, as `gdn-train model=NAME scale=SCALE` composes them.

For machines without hydra-core/omegaconf (the GPU benchmark image has PyYAML through transformers, not Hydra):

    kwargs = model_kwargs("gdn_h1", scale="1.3b", vocab_size=32000)
    model = LanguageModel(**kwargs)

Only what the model files use is understood: a defaults list of sibling model files, `_self_` and the group's
structured-config entry `schema` (Hydra's ConfigStore; skipped here), nested
mappings merged key by key (later wins, lists replaced whole), `_target_` (dropped) and the one interpolation
`${data.vocab_size}` (replaced by `vocab_size`). Anything else raises ValueError naming it; a test checks the
result equals Hydra's composition for every model and scale.
"""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import yaml

# The package's config tree, as gdn.config.paths finds it (not imported: gdn.config needs Hydra).
CONF_DIR = Path(str(files("gdn") / "_conf"))
SCHEMA_ENTRY = "schema"  # gdn.config.schema.SCHEMA: types the keys under Hydra, adds none
VOCAB_INTERPOLATION = "${data.vocab_size}"


def merge(base: dict, override: dict) -> dict:
    """Deep merge of two mappings: nested mappings key by key, everything else (lists too) replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_model_file(path: Path) -> dict:
    """One model file with its defaults list applied (sibling files in order, `_self_` where it stands, or last)."""
    if not path.is_file():
        raise ValueError(f"no model config {path}")
    content = yaml.safe_load(path.read_text()) or {}
    defaults = content.pop("defaults", [])
    if "_self_" not in defaults:
        defaults = [*defaults, "_self_"]
    merged: dict = {}
    for entry in defaults:
        if entry == SCHEMA_ENTRY:
            continue
        if entry == "_self_":
            merged = merge(merged, content)
        elif isinstance(entry, str):
            merged = merge(merged, read_model_file(path.with_name(f"{entry}.yaml")))
        else:
            raise ValueError(f"{path}: defaults entry {entry!r} is not a sibling model file; compose it with Hydra")
    return merged


def model_config(model: str, scale: str | None = None, conf_dir: Path = CONF_DIR) -> dict:
    """conf/model/MODEL.yaml, then conf/scale/SCALE/MODEL.yaml over it (the composed `model` node, unresolved)."""
    config = read_model_file(conf_dir / "model" / f"{model}.yaml")
    if scale is not None:
        sized = conf_dir / "scale" / scale / f"{model}.yaml"
        if not sized.is_file():
            raise ValueError(f"scale {scale!r} has no size for model {model!r}: expected {sized}")
        config = merge(config, yaml.safe_load(sized.read_text()) or {})
    return config


def model_kwargs(model: str, scale: str | None = None, vocab_size: int = 32000, conf_dir: Path = CONF_DIR) -> dict:
    """LanguageModel keyword arguments of `model=MODEL scale=SCALE` at the given vocabulary size."""
    config = model_config(model, scale, conf_dir)
    config.pop("_target_", None)
    if config.get("vocab_size") == VOCAB_INTERPOLATION:
        config["vocab_size"] = vocab_size
    unresolved = [key for key, value in flat_items(config) if isinstance(value, str) and "${" in value]
    if unresolved:
        raise ValueError(f"model {model!r}: interpolations other than {VOCAB_INTERPOLATION} need Hydra: {unresolved}")
    return config


def flat_items(config: dict, prefix: str = ""):
    for key, value in config.items():
        if isinstance(value, dict):
            yield from flat_items(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value
