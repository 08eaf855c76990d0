"""Step-by-step Mamba1 selective scan in plain PyTorch: the test oracle for every selective-scan implementation.

Per channel d and state n (Mamba, Gu & Dao 2023, Algorithm 2 with ZOH on A and Euler on B):
    h_t[d, n] = exp(dt_t[d] A[d, n]) h_{t-1}[d, n] + dt_t[d] B_t[n] x_t[d]
    y_t[d]    = sum_n C_t[n] h_t[d, n] + D[d] x_t[d]
The step size may come raw: with dt_bias [Dch] and/or dt_softplus, dt_t = softplus(dt_raw_t + dt_bias) (mamba_ssm's
delta_bias / delta_softplus), which lets a layer hand the bias and the softplus to a fused kernel.
Computes in float64 when given float64 (else float32). Differentiable through plain autograd (one Python step
per token: use small shapes).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from gdn.kernels.sequences import sequence_bounds


def step_size(dt: torch.Tensor, dt_bias: torch.Tensor | None, dt_softplus: bool) -> torch.Tensor:
    """The dt the recurrence uses: dt + dt_bias (when given), then softplus (when asked)."""
    if dt_bias is not None:
        dt = dt + dt_bias.to(dt.dtype)
    return F.softplus(dt) if dt_softplus else dt


def selective_scan_reference(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    dt_softplus: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Same arguments and layout as `gdn.kernels.selective_scan.selective_scan`."""
    batch, length, channels = x.shape
    dtype = torch.promote_types(x.dtype, torch.float32)
    x, dt, A, B, C = (t.to(dtype) for t in (x, dt, A, B, C))
    dt = step_size(dt, dt_bias, dt_softplus)
    rows = [[x.new_zeros(channels)] * length for _ in range(batch)]
    finals = []
    for seq, (b, start, end) in enumerate(sequence_bounds(cu_seqlens, batch, length)):
        h = initial_state[seq].to(dtype) if initial_state is not None else x.new_zeros(A.shape)
        for t in range(start, end):
            h = torch.exp(dt[b, t, :, None] * A) * h + (dt[b, t] * x[b, t])[:, None] * B[b, t]
            rows[b][t] = h @ C[b, t]
        finals.append(h)
    y = torch.stack([torch.stack(row) if length else x.new_zeros(0, channels) for row in rows])
    if D is not None:
        y = y + D.to(dtype) * x
    return y, (torch.stack(finals) if output_final_state else None)
