"""Every config in conf/ composes and instantiates (lightning-hydra-template style)."""
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from omegaconf import OmegaConf

from gdn.config import CONF_DIR, group_choices
from gdn.train.optim import build_optimizer
from gdn.train.trainer import TrainerSettings


def write_corpus(folder: Path) -> Path:
    words = "delta rule gate state chunk memory recall token sequence linear attention".split()
    g = torch.Generator().manual_seed(0)
    lines = [" ".join(words[i] for i in torch.randint(len(words), (12,), generator=g)) for _ in range(200)]
    path = folder / "corpus.txt"
    path.write_text("\n\n".join(lines) + "\n")  # a blank line between documents
    return path


def prepare_tokens(corpus: Path, out: Path) -> Path:
    from gdn.data.prepare import prepare

    prepare(str(corpus), out, vocab_size=300, val_docs=0, progress=False)
    return out


def instantiate_all(cfg):
    data = instantiate(cfg.data, _convert_="all")
    model = instantiate(cfg.model, vocab_size=data.vocab_size, _convert_="all")
    optimizer = build_optimizer(model, instantiate(cfg.optim.optimizer, _convert_="all"), cfg.optim.decay_embeddings)
    schedule = instantiate(cfg.sched)
    TrainerSettings(**cfg.trainer)
    batch = data.train_batch(0)
    logits = model(batch.input_ids, cu_seqlens=batch.cu_seqlens)
    assert logits.shape == (*batch.input_ids.shape, data.vocab_size)
    assert 0 < schedule(0, cfg.trainer.max_steps) <= 1
    assert optimizer.param_groups


def test_default_config_composes_and_instantiates(compose_config):
    instantiate_all(compose_config(tiny=False))


@pytest.mark.parametrize("group", ["model", "data", "optim", "sched", "trainer", "logging", "experiment"])
def test_every_choice_of_every_group_instantiates(compose_config, group, tmp_path):
    corpus = write_corpus(tmp_path)
    for choice in group_choices(CONF_DIR, group):
        override = f"{group}={choice}"
        cfg = compose_config(override)
        if "path" in cfg.data.keys() and OmegaConf.is_missing(cfg.data, "path"):
            cfg.data.path = str(corpus)  # text data needs a corpus; the test writes one
        if cfg.data._target_ == "gdn.data.TokenData":  # ... and token data that corpus prepared
            cfg.data.path = str(prepare_tokens(corpus, tmp_path / "tokens"))
        instantiate_all(cfg)


def test_paths_are_absolute_and_the_job_does_not_change_directory(compose_config):
    cfg = compose_config(tiny=False)
    assert Path(cfg.paths.output_root).is_absolute()
    assert OmegaConf.load(CONF_DIR / "train.yaml").hydra.job.chdir is False
