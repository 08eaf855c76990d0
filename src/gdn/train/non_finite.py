"""Where a non-finite step went wrong: the loss or the gradient first, and which parameters' gradients.

Called only once a step's loss or gradient norm is already known to be non-finite (healthy steps never get here,
so they pay nothing). The names are listed nearest the output first, the order in which the backward pass reaches
them: a NaN born in one layer's backward spreads to every parameter before it, so the first name is where it
appeared.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributed.tensor import DTensor

from gdn.train import distributed as dist_utils

# Wrappers that parallelize (activation checkpointing) and torch.compile put into parameter names.
WRAPPER_PARTS = ("_checkpoint_wrapped_module.", "_orig_mod.")
NAMES_SHOWN = 5


def parameter_name(name: str) -> str:
    """The LanguageModel's own name of a parameter (wrapper prefixes removed)."""
    for part in WRAPPER_PARTS:
        name = name.replace(part, "")
    return name


@torch.no_grad()
def non_finite_gradients(model: nn.Module) -> tuple[list[str], int]:
    """(names of the parameters whose gradient holds a NaN or inf on any rank, nearest the output first; the number
    of parameters with a gradient). Collective under a process group: one all-reduce of one flag per parameter,
    so every rank returns the same names. FSDP2 gradients are DTensors: each rank looks at its own shard."""
    named = [(parameter_name(name), p.grad) for name, p in model.named_parameters() if p.grad is not None]
    if not named:
        return [], 0
    local = [grad.to_local() if isinstance(grad, DTensor) else grad for _, grad in named]
    flags = torch.stack([(~torch.isfinite(grad)).any() for grad in local]).to(torch.int32)
    flags = dist_utils.all_reduce_sum(flags).tolist()
    return [name for (name, _), flag in reversed(list(zip(named, flags))) if flag], len(named)


def describe_non_finite(step: int, loss: float, grad_norm: float, model: nn.Module) -> str:
    """One line: the step, which went non-finite first, and the first parameters with non-finite gradients."""
    loss_first = not math.isfinite(loss)
    what = f"non-finite {'loss' if loss_first else 'gradient'} at step {step} (loss {loss}, grad norm {grad_norm})"
    first = ("the loss went non-finite first, in the forward pass" if loss_first
             else "the loss was finite: the gradient went non-finite first, in the backward pass")
    names, total = non_finite_gradients(model)
    if not names:
        return f"{what}: {first}; every parameter's gradient is finite"
    shown = ", ".join(names[:NAMES_SHOWN]) + (f" (+{len(names) - NAMES_SHOWN} more)" if len(names) > NAMES_SHOWN
                                               else "")
    return f"{what}: {first}; non-finite gradients in {len(names)} of {total} parameters, nearest the output " \
           f"first: {shown}"
