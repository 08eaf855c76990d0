"""Every architecture of conf/model trains: the loss falls over a few dozen steps (tiny sizes, CPU)."""
from pathlib import Path

import pytest

from gdn.train.cli import group_choices
from gdn.train.main import CONF_DIR, run


@pytest.mark.parametrize("model", group_choices(CONF_DIR, "model"))
def test_loss_decreases(compose_config, tmp_path: Path, model):
    cfg = compose_config(f"model={model}", "trainer.max_steps=30", "trainer.eval_every=30",
                         "trainer.checkpoint_every=30", "optim.optimizer.lr=3e-3", "sched.warmup_steps=5")
    losses = run(cfg, tmp_path / model).losses
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < 0.9 * sum(losses[:5]) / 5, losses
