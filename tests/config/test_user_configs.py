"""A user's own configs join through Hydra's --config-dir: a model of their own whose second mixer is a class of
their own, by `_target_`, with nothing of the package edited."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import gdn
from gdn.config import check_group_overrides
from gdn.eval.loading import load_run

USER_MIXER = '''
import torch
from torch import nn


class RunningMean(nn.Module):
    """A causal running mean of a projection of x: the mixer contract (x, cu_seqlens=None, state=None) -> (y, state)."""

    def __init__(self, d_model: int, width: int):
        super().__init__()
        self.in_proj = nn.Linear(d_model, width, bias=False)
        self.o_proj = nn.Linear(width, d_model, bias=False)

    def forward(self, x, cu_seqlens=None, state=None):
        h = self.in_proj(x)
        steps = torch.arange(1, x.shape[1] + 1, dtype=h.dtype, device=h.device)[:, None]
        return self.o_proj(h.cumsum(1) / steps), None
'''
USER_MODEL = """
# GDN blocks alternating with the user's own mixer (model/gdn.yaml comes from the package's tree)
defaults:
  - gdn
  - _self_

layers: [gdn, mean]
mixers:
  mean:
    _target_: my_mixers.RunningMean
    _partial_: true
    width: 16
"""


def test_a_model_of_ones_own_by_target_trains_from_a_config_dir(tmp_path):
    (tmp_path / "my_mixers.py").write_text(textwrap.dedent(USER_MIXER))
    (tmp_path / "my_conf" / "model").mkdir(parents=True)
    (tmp_path / "my_conf" / "model" / "mine.yaml").write_text(USER_MODEL)
    argv = ["--config-dir", str(tmp_path / "my_conf"), "model=mine", "logging=none", "trainer.max_steps=4",
            "trainer.eval_every=4", "trainer.checkpoint_every=4", "trainer.progress_bar=false"]
    assert check_group_overrides(argv[2:]).startswith("unknown model 'mine'")  # only the user's folder has it
    assert check_group_overrides(argv) is None

    env = {**os.environ, "GDN_OUTPUT_ROOT": str(tmp_path / "out"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), str(Path(gdn.__file__).parents[1])])}
    result = subprocess.run([sys.executable, "-m", "gdn.train", *argv], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    run_dir = next((tmp_path / "out" / "runs").glob("*/*"))
    sys.path.insert(0, str(tmp_path))
    try:
        run = load_run(run_dir)
    finally:
        sys.path.remove(str(tmp_path))
    assert [type(block.mixer).__name__ for block in run.model.blocks] == ["GatedDeltaNet", "RunningMean"]
    assert run.checkpoint.step == 4
