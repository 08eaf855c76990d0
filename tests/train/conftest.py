"""Compose the real Hydra config (conf/) for trainer tests, with a tiny CPU-sized model and data."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from gdn.config import CONF_DIR, register_resolvers

TINY = [
    "model.d_model=32", "++model.mixers.gdn.num_heads=2", "++model.mixers.gdn.head_dim=16",
    "trainer.max_steps=8", "trainer.log_every=2", "trainer.eval_every=4",
    "trainer.checkpoint_every=4", "trainer.progress_bar=false", "sched.warmup_steps=2",
]
# Applied to whichever data module the composition chose, key by key where the key exists.
TINY_DATA = {"vocab_size": 64, "seq_len": 32, "batch_size": 8, "num_kv_pairs": 4, "num_eval_examples": 32,
             "eval_sequences": 4}


@pytest.fixture
def compose_config(tmp_path: Path):
    """compose_config(*overrides) -> the composed DictConfig, writing under tmp_path, tracking off by default."""
    register_resolvers()

    def _compose(*overrides: str, tiny: bool = True):
        base = [f"paths.output_root={tmp_path}", "logging=none"] + (TINY if tiny else [])
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="train", overrides=base + list(overrides))
        if tiny:
            for key, value in TINY_DATA.items():
                if key in cfg.data.keys() and key not in " ".join(overrides):
                    cfg.data[key] = value
        return cfg

    return _compose
