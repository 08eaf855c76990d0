"""Optimizer parameter groups: weight decay only on matrices, never on norms, biases, gates or (by default) embeddings."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def parameter_groups(model: nn.Module, weight_decay: float, decay_embeddings: bool = False) -> list[dict]:
    """Two AdamW groups. No decay: every parameter of fewer than 2 dims (norm weights, biases, A_log, dt_bias),
    anything flagged `_no_weight_decay`, and nn.Embedding weights unless `decay_embeddings`."""
    embedding_params = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        skip = (
            param.ndim < 2
            or getattr(param, "_no_weight_decay", False)
            or (id(param) in embedding_params and not decay_embeddings)
        )
        (no_decay if skip else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(
    model: nn.Module, optimizer_factory: Callable[..., torch.optim.Optimizer], decay_embeddings: bool = False
) -> torch.optim.Optimizer:
    """`optimizer_factory` is the partially applied optimizer of the `optim` config (lr, betas, weight_decay...).
    Adam and AdamW left to choose (fused None or unset) take their fused implementation when every parameter is a
    CUDA tensor: one multi-tensor kernel per step where foreach launches a dozen, which small models feel."""
    weight_decay = optimizer_factory.keywords.get("weight_decay", 0.0)
    groups = parameter_groups(model, weight_decay, decay_embeddings)
    extra = {}
    if (optimizer_factory.func in (torch.optim.Adam, torch.optim.AdamW)
            and optimizer_factory.keywords.get("fused") is None
            and all(p.is_cuda for group in groups for p in group["params"])):
        extra["fused"] = True
    return optimizer_factory(groups, **extra)
