"""A DCP checkpoint consolidates into one safetensors file holding the LanguageModel's own state dict."""
from pathlib import Path

import torch
from hydra.utils import instantiate
from safetensors.torch import load_file

from gdn.train.export import load_consolidated_model_state
from gdn.train.export import main as export_main
from gdn.train.main import run, seed_everything


def test_export_writes_the_trained_weights_under_the_model_names(compose_config, tmp_path: Path):
    cfg = compose_config("trainer.max_steps=2", "trainer.checkpoint_every=2", "trainer.eval_every=2")
    result = run(cfg, tmp_path / "run")
    out = tmp_path / "model.safetensors"
    export_main([str(tmp_path / "run" / "checkpoints"), str(out)])
    weights = load_file(str(out))

    model = instantiate(cfg.model, vocab_size=cfg.data.vocab_size, _convert_="all")
    assert set(weights) == set(model.state_dict())
    model.load_state_dict(weights)
    seed_everything(cfg.seed)  # the run's initial weights
    initial = instantiate(cfg.model, vocab_size=cfg.data.vocab_size, _convert_="all")
    assert not torch.equal(model.lm_head.weight, initial.lm_head.weight)  # trained two steps
    consolidated = load_consolidated_model_state(result.checkpoint)
    assert all(torch.equal(weights[name], consolidated[name]) for name in weights)
    assert result.checkpoint.name == "step-000002"
