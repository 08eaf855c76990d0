"""Where the Hydra config tree and the sweeps are: package data of `gdn`, found through importlib.resources.

The top-level conf/ and sweeps/ folders of a checkout are the source of truth; src/gdn/_conf and src/gdn/_sweeps
are links to them, which a source checkout, an editable install and PYTHONPATH=src follow, and which a built
wheel (and `pip install .`) carries as real files (pyproject.toml's package-data).
"""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def package_folder(name: str) -> Path:
    """The folder `gdn/<name>` as a file-system path (Hydra reads configs from directories)."""
    folder = files("gdn") / name
    if not isinstance(folder, Path) or not folder.is_dir():
        raise FileNotFoundError(f"gdn's package data {name!r} is missing at {folder}: reinstall gdn "
                                f"(pip install .) or, in a checkout, restore the link src/gdn/{name}")
    return folder


CONF_DIR = package_folder("_conf")  # train.yaml, evaluate.yaml, generate.yaml and the groups
SWEEPS_DIR = package_folder("_sweeps")  # sweep/NAME.yaml, on Hydra's search path (conf/train.yaml)


def source_checkout() -> Path | None:
    """The checkout gdn runs from (src layout: <root>/src/gdn), for the git commit of a run's tags; None for an
    installed wheel, whose code is at no commit of a work tree."""
    root = Path(__file__).resolve().parents[3]
    return root if (root / "pyproject.toml").is_file() and (root / "conf" / "train.yaml").is_file() else None
