"""Checks of the command line made before Hydra runs, so a mistyped choice costs one clear line, not a trace."""
from __future__ import annotations

from pathlib import Path

CHECKED_GROUPS = ("model", "data", "optim", "sched", "trainer", "logging", "experiment")


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
