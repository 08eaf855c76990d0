"""RMSNorm and the gated per-head RMSNorm at the output of the GDN mixer. Statistics are taken in float32."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gdn.kernels import gated_rms_norm


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * w over the last dimension."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        wide = x.to(torch.promote_types(x.dtype, torch.float32))
        normalized = wide * torch.rsqrt(wide.pow(2).mean(-1, keepdim=True) + self.eps)
        return (normalized * self.weight.to(wide.dtype)).to(x.dtype)


class GatedRMSNorm(RMSNorm):
    """y = RMSNorm(x) * w * SiLU(gate): applied per head (dim = the head's value dim, weight shared by heads)."""

    def forward(self, x: torch.Tensor, gate: torch.Tensor, triton: bool = False) -> torch.Tensor:
        if triton:
            return gated_rms_norm(x, gate, self.weight, self.eps)  # one fused kernel, fp32 statistics
        return super().forward(x) * F.silu(gate)
