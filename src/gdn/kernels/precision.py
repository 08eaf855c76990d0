"""The PyTorch paths' precision under mixed-precision training."""
from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import TypeVar

import torch

F = TypeVar("F", bound=Callable)


def without_autocast(path: F) -> F:
    """Runs a PyTorch path with autocast off on the device of its first argument, so that it computes in the
    float32 (float64) its docstring promises: under bf16 autocast its matmuls would run in bf16 and lose the decays,
    the states and the gated delta rule's T = (I + A)^-1."""

    first_name = next(iter(inspect.signature(path).parameters))

    @functools.wraps(path)
    def run(*args, **kwargs):
        first = args[0] if args else kwargs[first_name]
        with torch.autocast(first.device.type, enabled=False):
            return path(*args, **kwargs)

    return run  # type: ignore[return-value]
