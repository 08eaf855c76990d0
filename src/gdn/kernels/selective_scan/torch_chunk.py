"""Chunked Mamba1 selective scan in PyTorch (the CPU path), recomputing each chunk in the backward pass.

Within a chunk of L tokens (positions i, j = 0..L-1), with the cumulative log decay per (d, n)
    c_i[d, n] = sum_{j <= i} dt_j[d] A[d, n]
the recurrence h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t (reference.py) unrolls to
    h_i = exp(c_i) h_0 + sum_{j <= i} exp(c_i - c_j) B_j (dt_j x_j)
    y_i = sum_n C_i[n] h_i[:, n]                                  (+ D x_i, added once outside the chunks)
so a chunk is a masked lower-triangular contraction over (i, j) plus the carried-in state h_0; the state passes
from chunk to chunk sequentially. Decays are always differences c_i - c_j with j <= i (never exp(-c_j) alone),
so nothing overflows.

Memory: the pairwise decays exp(c_i - c_j) form one [L, L, Dch, N] tensor per row and chunk, L^2 / L = L times
a per-token state; chunk_size 16 keeps it at 256 Dch N values per row. Chunks run one after another and each runs
under torch.utils.checkpoint, so autograd keeps only the chunk-boundary states [B, Dch, N] (plus the inputs) and
rebuilds a chunk's decays during the backward pass, never every h_t.
"""
from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from gdn.kernels.gated_delta._common import floor_fp32_log_decays
from gdn.kernels.precision import without_autocast
from gdn.kernels.selective_scan.reference import step_size
from gdn.kernels.sequences import packed_as_rows


def scan_chunk(
    x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, h0: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One chunk: x, dt [R, L, Dch], A [Dch, N], B, C [R, L, N], h0 [R, Dch, N] -> (y [R, L, Dch] without the
    D skip, h_L [R, Dch, N])."""
    L = x.shape[1]
    log_decay = torch.cumsum(floor_fp32_log_decays(dt[..., None] * A), dim=1)  # c_i: [R, L, Dch, N]
    u = dt * x  # dt_j x_j
    causal = torch.ones(L, L, dtype=torch.bool, device=x.device).tril()  # j <= i
    pairwise = log_decay[:, :, None] - log_decay[:, None, :]  # c_i - c_j: [R, L(i), L(j), Dch, N]
    decay = pairwise.masked_fill(~causal[:, :, None, None], float("-inf")).exp()
    CB = C[:, :, None, :] * B[:, None, :, :]  # C_i[n] B_j[n]: [R, L, L, N]
    y_intra = torch.einsum("rijdn,rijn,rjd->rid", decay, CB, u)
    y_carried = torch.einsum("rin,ridn,rdn->rid", C, log_decay.exp(), h0)
    to_end = (log_decay[:, -1:] - log_decay).exp()  # exp(c_{L-1} - c_j): [R, L, Dch, N]
    h_end = log_decay[:, -1].exp() * h0 + torch.einsum("rjdn,rjn,rjd->rdn", to_end, B, u)
    return y_intra + y_carried, h_end


def scan_sequence(x, dt, A, B, C, h0, chunk_size):
    """Chunks of one (batch of) sequence(s) [R, T, ...] in order, each checkpointed when gradients are needed."""
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (x, dt, A, B, C, h0))
    outputs, h = [], h0
    for start in range(0, x.shape[1], chunk_size):
        x_c, dt_c, B_c, C_c = (t[:, start : start + chunk_size] for t in (x, dt, B, C))
        if needs_grad:
            y, h = checkpoint(scan_chunk, x_c, dt_c, A, B_c, C_c, h, use_reentrant=False)
        else:
            y, h = scan_chunk(x_c, dt_c, A, B_c, C_c, h)
        outputs.append(y)
    return torch.cat(outputs, dim=1) if outputs else x.new_zeros(x.shape), h


@without_autocast
def selective_scan_torch(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    chunk_size: int = 16,
    dt_bias: torch.Tensor | None = None,
    dt_softplus: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Same arguments and layout as `gdn.kernels.selective_scan.selective_scan`. The scan runs in float32 (float64
    for float64 inputs) even under autocast: its decays and states would not survive bfloat16 einsums."""
    dtype = torch.promote_types(x.dtype, torch.float32)
    dt = step_size(dt.to(dtype), dt_bias, dt_softplus)
    return scan_all_sequences(x, dt, A, B, C, D, initial_state, output_final_state, cu_seqlens, chunk_size)


def scan_all_sequences(x, dt, A, B, C, D, initial_state, output_final_state, cu_seqlens, chunk_size):
    """selective_scan_torch without the autocast guard or the step-size transform: every row, or every packed
    sequence, from its own state."""
    dtype = torch.promote_types(x.dtype, torch.float32)
    xs, dt, A, B, C = (t.to(dtype) for t in (x, dt, A, B, C))
    num_states = x.shape[0] if cu_seqlens is None else cu_seqlens.numel() - 1
    states = xs.new_zeros(num_states, *A.shape) if initial_state is None else initial_state.to(dtype)

    if cu_seqlens is None:
        y, final = scan_sequence(xs, dt, A, B, C, states, chunk_size)
    else:  # one sequence at a time, each from its own initial state
        def run(x_s, dt_s, B_s, C_s, h0):
            return scan_sequence(x_s, dt_s, A, B_s, C_s, h0, chunk_size)

        y, final = packed_as_rows(run, (xs, dt, B, C), states, cu_seqlens)
    if D is not None:
        y = y + D.to(dtype) * xs
    return y.to(x.dtype), (final if output_final_state else None)
