"""MLflow run names that tell the runs apart in the UI's runs table.

    a sweep's parent   the sweep and when it started:  "baselines 2026-12-02 13:50"
    a sweep's child    its variant: the architecture, then the overrides whose value differs between the sweep's
                       jobs as key=value (the key's last component):  "gdn", "gdn seed=1", "gdn ablation=no_gate"
    a single run       the architecture, then its command-line overrides the same way:  "transformer lr=0.001"
"""
from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

MODEL_KEY = "model"  # its value is the architecture, which leads every name
NOT_NAMING = ("hydra.", "paths.", "logging.", "trainer.resume")  # overrides that do not change what is trained
MAX_RUN_NAME = 250  # MLflow's limit on a run name


def override_key(key: str) -> str:
    """Hydra's `+key`, `++key`, `~key` -> `key`."""
    return key.lstrip("+~")


def short_key(key: str) -> str:
    """`optim.optimizer.lr` -> `lr`, `+ablation` -> `ablation`."""
    return override_key(key).rsplit(".", 1)[-1]


def split_overrides(overrides: list[str]) -> dict[str, str]:
    """["+ablation=no_gate", "seed=1"] -> {"ablation": "no_gate", "seed": "1"} (a deletion `~key` has no value)."""
    pairs = (item.split("=", 1) for item in overrides if "=" in item)
    return {override_key(key): value for key, value in pairs}


def varying_sweep_keys(sweeper_params: Mapping[str, str], command_line: list[str]) -> list[str]:
    """The keys that take more than one value over a sweep's jobs: the sweeper's params, then the command line's
    overrides, which win for a key as in Hydra's sweepers (parsed with Hydra's override grammar). A choice or range
    of two or more values varies, and so does a search space (Optuna's interval)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in sweeper_params.items()]
                                                      + list(command_line))
    varies: dict[str, bool] = {}
    for override in parsed:
        varies[override.key_or_group] = override.is_sweep_override() and (
            not override.is_discrete_sweep() or len(set(override.sweep_string_iterator())) > 1)
    return [key for key, varying in varies.items() if varying]


def readable(value: str) -> str:
    """A float at 4 significant digits (Optuna's 0.0012345678 -> 0.001235); anything else as it is."""
    if any(c in value for c in ".eE"):
        try:
            return f"{float(value):.4g}"
        except ValueError:
            pass
    return value


def run_name(architecture: str, overrides: list[str], keys: list[str] | None = None) -> str:
    """The architecture, then each override (only those of `keys`, in that order, when given) as key=value."""
    values = split_overrides(overrides)
    if keys is None:
        keys = [key for key in values if not key.startswith(NOT_NAMING)]
    parts = [architecture] + [f"{short_key(key)}={readable(values[key])}"
                              for key in keys if key != MODEL_KEY and key in values]
    return " ".join(parts)[:MAX_RUN_NAME]


def sweep_run_name(sweep_name: str, started: datetime) -> str:
    return f"{sweep_name} {started:%Y-%m-%d %H:%M}"
