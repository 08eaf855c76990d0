"""Checks of the command line made before Hydra runs, so a mistyped choice costs one clear line, not a trace.

The choices of a group are the YAML files in the package's config tree and in the user's own config folders
(`--config-dir DIR` and `hydra.searchpath=[file://DIR,...]` on the command line)."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from gdn.config.paths import CONF_DIR

CHECKED_GROUPS = ("model", "data", "optim", "sched", "trainer", "logging", "eval", "experiment", "scale")


def group_choices(conf_dir: Path | Iterable[Path], group: str) -> list[str]:
    """The config names of `group` in one config folder, or in several (the union)."""
    folders = [conf_dir] if isinstance(conf_dir, Path) else list(conf_dir)
    return sorted({p.stem for folder in folders for p in (Path(folder) / group).glob("*.yaml")})


def user_config_dirs(argv: list[str]) -> list[Path] | None:
    """The folders of `--config-dir`/`-cd` and of file:// entries of `hydra.searchpath=[...]`; None when the
    search path holds something else (pkg://), whose choices only Hydra can list."""
    folders: list[Path] = []
    for i, arg in enumerate(argv):
        if arg in ("--config-dir", "-cd") and i + 1 < len(argv):
            folders.append(Path(argv[i + 1]))
        elif arg.startswith(("--config-dir=", "-cd=")):
            folders.append(Path(arg.partition("=")[2]))
        elif arg.lstrip("+").startswith("hydra.searchpath="):
            for entry in arg.partition("=")[2].strip("[]").split(","):
                entry = entry.strip().strip("'\"")
                if not entry.startswith("file://"):
                    return None
                folders.append(Path(entry.removeprefix("file://")))
    return [folder.expanduser().resolve() for folder in folders]


def check_group_overrides(argv: list[str], conf_dir: Path = CONF_DIR) -> str | None:
    """The error line for the first `group=name` override whose name has no config file, else None.
    Understands `+group=name`, `~group` and multirun lists `group=a,b`; leaves sweep functions to Hydra."""
    user_dirs = user_config_dirs(argv)
    if user_dirs is None:
        return None
    for arg in argv:
        key, sep, value = arg.lstrip("+").partition("=")
        if not sep or key not in CHECKED_GROUPS or "(" in value or value in ("null", ""):
            continue
        choices = group_choices([conf_dir, *user_dirs], key)
        for name in value.split(","):
            if name not in choices:
                return f"unknown {key} {name!r}; choices: {', '.join(choices)}"
    return None


def missing_scale_size(choices: Mapping[str, str | None], conf_dir: Path = CONF_DIR) -> str | None:
    """The error line when a scale is chosen but has no sizes for the chosen model (conf/train.yaml includes
    conf/scale/SCALE/MODEL.yaml as optional, so that no scale leaves the model config's own sizes), else None."""
    scale, model = choices.get("scale"), choices.get("model")
    if scale is None or model is None or (conf_dir / "scale" / scale / f"{model}.yaml").is_file():
        return None
    return f"scale {scale!r} has no sizes for model {model!r}: write conf/scale/{scale}/{model}.yaml"
