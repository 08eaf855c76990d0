"""Chunked Mamba2 SSD in plain PyTorch: the CPU training path, differentiable by autograd.

The SSD recurrence h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t^T, y_t = C_t^T h_t + D x_t is scalar-decay linear
attention with q = C, k = B, v = dt o x and log decay g = dt A. Split into chunks of C tokens; inside a chunk,
with b_i = sum_{j<=i} g_j (gamma_i = exp(b_i)) and L_ij = gamma_i / gamma_j on and below the diagonal:
    Y_intra = (C B^T o L) V                          all chunks at once (the "diagonal blocks")
    dS      = ((gamma_end / gamma) o B)^T V            each chunk's own contribution to the state
    S_next  = gamma_end S + dS                         the only sequential step, over chunks
    Y       = Y_intra + (gamma o C) S + D x            S = the state entering the chunk
"""
from __future__ import annotations

import torch

from gdn.kernels.gated_delta._common import floor_fp32_log_decays
from gdn.kernels.gated_delta.torch_chunk import _from_chunks, _to_chunks
from gdn.kernels.precision import without_autocast
from gdn.kernels.sequences import packed_as_rows
from gdn.kernels.ssd.reference import expand_groups


@without_autocast
def chunk_ssd_torch(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Same arguments and layout as `recurrent_ssd_reference`, plus the chunk size.

    x [B, T, H, P]; dt [B, T, H]; A, D [H]; B, C [B, T, G, N]; states [N_seq, H, N, P] in float32.
    Computes in float32 (float64 when x is float64), under autocast too; y comes back in x's dtype.
    """
    batch, T, H, _ = x.shape
    if cu_seqlens is not None and batch != 1:
        raise ValueError(f"cu_seqlens needs batch size 1, got {batch}")
    compute_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    x_wide, dt, A = x.to(compute_dtype), dt.to(compute_dtype), A.to(compute_dtype)
    q, k = (expand_groups(t, H).to(compute_dtype) for t in (C, B))
    v, g = x_wide * dt[..., None], dt * A  # V = dt o x, g = log exp(dt A)
    g = floor_fp32_log_decays(g)  # _common.LOG_DECAY_FLOOR says why
    state = None if initial_state is None else initial_state.to(compute_dtype)

    if cu_seqlens is None:
        y, final = _chunked_sequences(q, k, v, g, state, chunk_size)
    else:
        run = lambda *pieces: _chunked_sequences(*pieces, chunk_size)  # noqa: E731
        y, final = packed_as_rows(run, (q, k, v, g), state, cu_seqlens)
    if D is not None:
        y = y + D.to(compute_dtype)[:, None] * x_wide  # the skip connection D x
    return y.to(x.dtype), (final if output_final_state else None)


def _chunked_sequences(q, k, v, g, initial_state, chunk_size):
    """One sequence per batch row. Returns y [B, T, H, P] (without D x) and the final state [B, H, N, P]."""
    batch, T, H, N = k.shape
    P = v.shape[-1]
    size = max(1, min(chunk_size, T))  # a short input is a single chunk of its own length
    q, k, v = (_to_chunks(t, size) for t in (q, k, v))  # [B, H, chunks, C, D]
    log_gamma = _to_chunks(g[..., None], size)[..., 0].cumsum(-1)  # b_i; padding has g = 0, k = v = 0
    causal = torch.ones(size, size, dtype=torch.bool, device=q.device).tril()
    # L_ij = exp(b_i - b_j) on and below the diagonal; masked before exp so that it cannot overflow.
    L = (log_gamma[..., :, None] - log_gamma[..., None, :]).masked_fill(~causal, float("-inf")).exp()
    y_intra = ((q @ k.transpose(-1, -2)) * L) @ v
    k_to_end = (log_gamma[..., -1:] - log_gamma).exp()[..., None] * k
    chunk_states = k_to_end.transpose(-1, -2) @ v  # dS, [B, H, chunks, N, P]
    chunk_decay = log_gamma[..., -1].exp()[..., None, None]  # gamma_end, [B, H, chunks, 1, 1]

    state = initial_state if initial_state is not None else q.new_zeros(batch, H, N, P)
    entering = []
    for n in range(q.shape[2]):
        entering.append(state)
        state = chunk_decay[:, :, n] * state + chunk_states[:, :, n]
    if not entering:
        return v.new_zeros(batch, 0, H, P), state
    y_inter = (log_gamma.exp()[..., None] * q) @ torch.stack(entering, dim=2)
    return _from_chunks(y_intra + y_inter, T), state
