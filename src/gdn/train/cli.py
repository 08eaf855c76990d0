"""Checks of the command line made before Hydra runs, so a mistyped choice costs one clear line, not a trace."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

CHECKED_GROUPS = ("model", "data", "optim", "sched", "trainer", "logging", "eval", "experiment", "scale")


def group_choices(conf_dir: Path, group: str) -> list[str]:
    return sorted(p.stem for p in (conf_dir / group).glob("*.yaml"))


def check_group_overrides(argv: list[str], conf_dir: Path) -> str | None:
    """The error line for the first `group=name` override whose name has no config file, else None.
    Understands `+group=name`, `~group` and multirun lists `group=a,b`; leaves sweep functions to Hydra."""
    for arg in argv:
        key, sep, value = arg.lstrip("+").partition("=")
        if not sep or key not in CHECKED_GROUPS or "(" in value or value in ("null", ""):
            continue
        choices = group_choices(conf_dir, key)
        for name in value.split(","):
            if name not in choices:
                return f"unknown {key} {name!r}; choices: {', '.join(choices)}"
    return None


def missing_scale_size(choices: Mapping[str, str | None], conf_dir: Path) -> str | None:
    """The error line when a scale is chosen but has no sizes for the chosen model (conf/train.yaml includes
    conf/scale/SCALE/MODEL.yaml as optional, so that no scale leaves the model config's own sizes), else None."""
    scale, model = choices.get("scale"), choices.get("model")
    if scale is None or model is None or (conf_dir / "scale" / scale / f"{model}.yaml").is_file():
        return None
    return f"scale {scale!r} has no sizes for model {model!r}: write conf/scale/{scale}/{model}.yaml"
