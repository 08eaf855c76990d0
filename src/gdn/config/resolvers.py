"""The OmegaConf resolvers the config tree uses; every command registers them before composing."""
from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from omegaconf import OmegaConf

from gdn.config.paths import SWEEPS_DIR

LAUNCH_TIME_ENV = "GDN_LAUNCH_TIME"  # set by gdn.train.launch under a multi-process launch


def launch_time() -> datetime:
    """The instant rank 0 chose (GDN_LAUNCH_TIME, ISO format) or, for one process, now."""
    stamp = os.environ.get(LAUNCH_TIME_ENV)
    return datetime.fromisoformat(stamp) if stamp else datetime.now()


def register_resolvers() -> None:
    # ${gdn.abspath:path}: absolute, relative to the directory the run was started from (the cwd never changes).
    OmegaConf.register_new_resolver("gdn.abspath", lambda p: str(Path(p).expanduser().resolve()), replace=True)
    # ${gdn.launch_time:%Y-%m-%d}: like Hydra's ${now:...}, but the same instant on every rank. Cached like ${now:}:
    # Hydra copies the cache into each job's config, so all jobs of a multirun share one sweep folder.
    OmegaConf.register_new_resolver("gdn.launch_time", lambda fmt: launch_time().strftime(fmt), replace=True,
                                    use_cache=True)
    # ${gdn.sweeps_dir:}: the installed sweeps folder (hydra.searchpath finds sweeps/sweep/NAME.yaml through it).
    OmegaConf.register_new_resolver("gdn.sweeps_dir", lambda: str(SWEEPS_DIR), replace=True)
