"""Weight-decay groups and learning-rate schedules."""
import math

import pytest
import torch
from torch import nn

import functools

from gdn.train.optim import build_optimizer, parameter_groups
from gdn.train.schedule import WarmupConstant, WarmupCosine


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.proj = nn.Linear(4, 4)  # weight decays, bias does not
        self.norm = nn.LayerNorm(4)
        self.A_log = nn.Parameter(torch.zeros(2))
        self.gate = nn.Parameter(torch.zeros(2, 2))
        self.gate._no_weight_decay = True


def names_in(model, params):
    ids = {id(p) for p in params}
    return sorted(n for n, p in model.named_parameters() if id(p) in ids)


def test_no_decay_group_holds_norms_biases_gates_and_embeddings():
    model = Toy()
    decay, no_decay = parameter_groups(model, weight_decay=0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert names_in(model, decay["params"]) == ["proj.weight"]
    assert names_in(model, no_decay["params"]) == ["A_log", "embed.weight", "gate", "norm.bias", "norm.weight",
                                                   "proj.bias"]


def test_embeddings_decay_when_configured():
    model = Toy()
    decay, _ = parameter_groups(model, weight_decay=0.1, decay_embeddings=True)
    assert names_in(model, decay["params"]) == ["embed.weight", "proj.weight"]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_adamw_left_to_choose_is_fused_on_the_gpu_only(device):
    model = Toy().to(device)
    optimizer = build_optimizer(model, functools.partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.1, fused=None))
    assert bool(optimizer.defaults["fused"]) == (device == "cuda")
    chosen = build_optimizer(model, functools.partial(torch.optim.AdamW, lr=1e-3, fused=False))
    assert not chosen.defaults["fused"]


def test_warmup_cosine_reaches_the_peak_then_the_floor():
    schedule = WarmupCosine(warmup_steps=10, min_lr_ratio=0.1)
    assert schedule(0, 100) == pytest.approx(0.1)
    assert schedule(9, 100) == pytest.approx(1.0)
    assert schedule(10, 100) == pytest.approx(1.0)
    assert schedule(55, 100) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert schedule(100, 100) == pytest.approx(0.1)
    assert schedule(500, 100) == pytest.approx(0.1)


def test_warmup_constant():
    schedule = WarmupConstant(warmup_steps=4)
    assert [schedule(s, 10) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
