"""Compose the real Hydra config (conf/) for trainer tests, with a tiny CPU-sized model and data."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from gdn.train.main import CONF_DIR, register_resolvers

TINY = [
    "model.d_model=32", "model.mixers.gdn.num_heads=2", "model.mixers.gdn.head_dim=16",
    "data.vocab_size=64", "data.seq_len=32", "data.num_kv_pairs=4", "data.batch_size=8",
    "data.num_eval_examples=32", "trainer.max_steps=8", "trainer.log_every=2", "trainer.eval_every=4",
    "trainer.checkpoint_every=4", "trainer.progress_bar=false", "sched.warmup_steps=2",
]


@pytest.fixture
def compose_config(tmp_path: Path):
    """compose_config(*overrides) -> the composed DictConfig, writing under tmp_path, tracking off by default."""
    register_resolvers()

    def _compose(*overrides: str, tiny: bool = True):
        base = [f"paths.output_root={tmp_path}", "logging=none"] + (TINY if tiny else [])
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="train", overrides=base + list(overrides))

    return _compose
