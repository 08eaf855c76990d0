"""Rotary position embedding (RoPE), rotate-half layout: pairs (x_i, x_{i+D/2}) turn by angle p * base^(-2i/D)."""
from __future__ import annotations

import torch
from torch import nn


class RotaryEmbedding(nn.Module):
    """No buffers: the frequencies are recomputed per call (D/2 numbers), so meta-device init needs nothing."""

    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"RoPE needs an even head dim, got {head_dim}")
        self.head_dim = head_dim
        self.base = base

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """x [B, T, H, D], positions [T] (restart at 0 in each packed document)."""
        dtype = torch.promote_types(x.dtype, torch.float32)
        exponents = torch.arange(0, self.head_dim, 2, device=x.device, dtype=dtype) / self.head_dim
        angles = positions.to(dtype)[:, None] * self.base**-exponents  # [T, D/2]
        cos, sin = angles.cos()[:, None, :], angles.sin()[:, None, :]  # broadcast over heads
        first, second = x.to(dtype).chunk(2, dim=-1)
        rotated = torch.cat([first * cos - second * sin, second * cos + first * sin], dim=-1)
        return rotated.to(x.dtype)
