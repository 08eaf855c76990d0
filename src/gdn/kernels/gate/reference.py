"""The GDN decay gate in plain PyTorch: the test oracle for `gdn_gate`.

    g = -exp(A_log) * softplus(a + dt_bias)      (log alpha_t, Mamba2's gate; softplus is linear above 20)
Computes in float32, or float64 when `a` is float64. Differentiable through plain autograd.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def gdn_gate_reference(a: torch.Tensor, A_log: torch.Tensor, dt_bias: torch.Tensor) -> torch.Tensor:
    """a [..., H]; A_log, dt_bias [H]; returns g [..., H]."""
    compute_dtype = torch.promote_types(a.dtype, torch.float32)
    z = a.to(compute_dtype) + dt_bias.to(compute_dtype)
    return -A_log.to(compute_dtype).exp() * F.softplus(z, threshold=20.0)
