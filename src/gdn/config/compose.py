"""Composition of a config of the tree outside `gdn-train` (gdn-eval, gdn-generate, gdn-models, tests)."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from gdn.config.paths import CONF_DIR
from gdn.config.resolvers import register_resolvers


@contextlib.contextmanager
def config_tree(conf_dir: Path = CONF_DIR) -> Iterator[None]:
    """Within: hydra.compose reads the package's config tree (the resolvers registered)."""
    register_resolvers()
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        yield


def compose_config(config_name: str = "train", overrides: list[str] | None = None) -> DictConfig:
    """One config of the tree (train, evaluate, generate) with the overrides applied."""
    with config_tree():
        return compose(config_name=config_name, overrides=list(overrides or []))
