"""Step-by-step Mamba2 SSD recurrence in plain PyTorch: the test oracle for every SSD implementation.

Per head h (scalar decay), with state h_t of shape [N, P] (d_state x headdim):
    h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t^T
    y_t = C_t^T h_t + D x_t
B_t and C_t come from the head's group (ngroups G divides H; head h reads group h // (H / G)).
Runs in the dtype it is given: pass float64 inputs for an oracle. Differentiable by plain autograd (slow: use
small shapes).
"""
from __future__ import annotations

import torch

from gdn.kernels.sequences import sequence_bounds


def check_groups(groups: int, num_heads: int) -> None:
    if num_heads % groups:
        raise ValueError(f"ngroups={groups} must divide the number of heads {num_heads}")


def expand_groups(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """B or C [B, T, G, N] -> [B, T, H, N]: each of the G groups serves H / G consecutive heads."""
    check_groups(x.shape[2], num_heads)
    return x.repeat_interleave(num_heads // x.shape[2], dim=2)


def recurrent_ssd_reference(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Same arguments and layout as `gdn.kernels.ssd.chunk_ssd`; computes in x's dtype.

    x [B, T, H, P]; dt [B, T, H] (after softplus and bias); A [H] (negative); B, C [B, T, G, N]; D [H];
    states [N_seq, H, N, P].
    """
    batch, T, H, P = x.shape
    B, C = expand_groups(B, H), expand_groups(C, H)
    N = B.shape[-1]
    outputs = [[x.new_zeros(H, P)] * T for _ in range(batch)]
    finals = []
    for n, (b, start, end) in enumerate(sequence_bounds(cu_seqlens, batch, T)):
        h = initial_state[n].to(x.dtype) if initial_state is not None else x.new_zeros(H, N, P)
        for t in range(start, end):
            dt_t = dt[b, t].to(x.dtype)  # [H]
            decay = torch.exp(dt_t * A.to(x.dtype))[:, None, None]
            h = decay * h + dt_t[:, None, None] * B[b, t][:, :, None] * x[b, t][:, None, :]
            y = torch.einsum("hnp,hn->hp", h, C[b, t])
            if D is not None:
                y = y + D.to(x.dtype)[:, None] * x[b, t]
            outputs[b][t] = y
        finals.append(h)
    y = torch.stack([torch.stack(row) if T else x.new_zeros(0, H, P) for row in outputs])
    return y, (torch.stack(finals) if output_final_state else None)
