"""Chunked gated delta rule in plain PyTorch: the CPU training path, differentiable by autograd.

Per head, with state S of shape [K, V] and the recurrence (gated-deltanet-facts.md)
    S_t = alpha_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T,    o_t = S_t^T (scale q_t),
split the sequence into chunks of C tokens. Inside a chunk that starts from state S, with the cumulative
log gate b_i = sum_{j<=i} log alpha_j (gamma_i = exp(b_i)) and Gamma_ij = gamma_i / gamma_j:
    A     = strictly-lower(diag(beta) (Gamma o K K^T))          intra-chunk delta-rule interactions
    T     = (I + A)^-1                                          UT transform (a unit-lower triangular solve)
    W     = T diag(beta) (gamma o K),    U = T diag(beta) V     WY representation
    V_new = U - W S                                             the corrected values ("deltas")
    O     = scale [ (gamma o Q) S + (Q K^T o Gamma o causal-incl-diag) V_new ]
    S'    = gamma_C S + ((gamma_C / gamma) o K)^T V_new
Everything except the state pass over chunks is batched over all chunks at once.
"""
from __future__ import annotations

import torch

from gdn.kernels.gated_delta._common import floor_fp32_log_decays
from gdn.kernels.gated_delta.reference import l2_normalize
from gdn.kernels.precision import without_autocast
from gdn.kernels.sequences import packed_as_rows


@without_autocast
def chunk_gated_delta_rule_torch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    use_qk_l2norm: bool = False,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Same arguments and layout as `gdn.kernels.chunk_gated_delta_rule`, plus the chunk size.

    q, k: [B, T, H, K]; v: [B, T, H, V]; g (natural-log decay), beta: [B, T, H]; states: [N, H, K, V].
    Everything runs in float32 (float64 when q is float64), under autocast too; o comes back in q's dtype.
    """
    B, T, H, K = q.shape
    if cu_seqlens is not None and B != 1:
        raise ValueError(f"cu_seqlens needs batch size 1, got {B}")
    scale = K**-0.5 if scale is None else scale
    out_dtype = q.dtype
    compute_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    q, k, v, g, beta = (x.to(compute_dtype) for x in (q, k, v, g, beta))
    if use_qk_l2norm:
        q, k = l2_normalize(q), l2_normalize(k)
    if initial_state is not None:
        initial_state = initial_state.to(compute_dtype)
    g = floor_fp32_log_decays(g)  # _common.LOG_DECAY_FLOOR says why

    if cu_seqlens is None:
        o, final = _chunked_sequences(q * scale, k, v, g, beta, initial_state, chunk_size)
    else:
        run = lambda *pieces: _chunked_sequences(*pieces, chunk_size)  # noqa: E731
        o, final = packed_as_rows(run, (q * scale, k, v, g, beta), initial_state, cu_seqlens)
    return o.to(out_dtype), (final if output_final_state else None)


def _chunked_sequences(q, k, v, g, beta, initial_state, chunk_size):
    """One sequence per batch row; q is already scaled. Returns o [B, T, H, V] and the final state."""
    B, T, H, K = k.shape
    V = v.shape[-1]
    C = max(1, min(chunk_size, T))  # a short input is a single chunk of its own length
    q, k, v = (_to_chunks(x, C) for x in (q, k, v))  # [B, H, N, C, D]
    g, beta = (_to_chunks(x[..., None], C)[..., 0] for x in (g, beta))  # [B, H, N, C]

    log_gamma = g.cumsum(-1)  # b_i; padded tokens carry g = 0, beta = 0, k = v = 0: no effect on S
    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    # Gamma_ij = exp(b_i - b_j) on and below the diagonal; masked before exp so that it cannot overflow.
    decay = (log_gamma[..., :, None] - log_gamma[..., None, :]).masked_fill(~causal, float("-inf")).exp()

    A = (beta[..., None] * decay * (k @ k.transpose(-1, -2))).tril(-1)
    T_inv = _unit_lower_inverse(A)  # (I + A)^-1
    U = T_inv @ (beta[..., None] * v)
    W = T_inv @ (beta[..., None] * log_gamma.exp()[..., None] * k)

    q_decayed = log_gamma.exp()[..., None] * q  # gamma o Q
    intra = (q @ k.transpose(-1, -2)) * decay  # Q K^T o Gamma, causal including the diagonal
    chunk_decay = log_gamma[..., -1:].exp()  # gamma_C, [B, H, N, 1]
    k_to_end = (log_gamma[..., -1:] - log_gamma).exp()[..., None] * k  # (gamma_C / gamma) o K

    state = initial_state if initial_state is not None else q.new_zeros(B, H, K, V)
    outputs = []
    for n in range(q.shape[2]):
        v_new = U[:, :, n] - W[:, :, n] @ state
        outputs.append(q_decayed[:, :, n] @ state + intra[:, :, n] @ v_new)
        state = chunk_decay[:, :, n, :, None] * state + k_to_end[:, :, n].transpose(-1, -2) @ v_new
    o = torch.stack(outputs, dim=2) if outputs else v.new_zeros(B, H, 0, C, V)
    return _from_chunks(o, T), state


def _unit_lower_inverse(A: torch.Tensor) -> torch.Tensor:
    """(I + A)^-1 for strictly lower-triangular A [..., C, C], by doubling the inverted diagonal blocks.

    With X = (I + A)^-1 known on two adjacent diagonal blocks of size b, the block of size 2b is
        [[X_11, 0], [-X_22 A_21 X_11, X_22]],
    so log2(C) steps of two batched matmuls each build the whole inverse from 1 x 1 blocks. Every product is of
    blocks of the inverse itself, whose entries stay of order one. (The power series sum_j (-A)^j, by repeated
    squaring, is as cheap but not stable: with positive keys, as after the layer's SiLU, K K^T is near all-ones
    and the entries of A^j grow like binomial coefficients, C(63, 31) ~ 1e18, before they cancel; in fp32 that
    gave NaN losses.)
    """
    C = A.shape[-1]
    size = 1 << max(0, (C - 1).bit_length())  # a power of two; the padding is the identity
    A = torch.nn.functional.pad(A, (0, size - C, 0, size - C))
    lead = A.shape[:-2]
    blocks = A.new_ones(*lead, size, 1, 1)  # inverses of the 1 x 1 diagonal blocks
    b = 1
    while b < size:
        n = size // b
        tiles = A.reshape(*lead, n, b, n, b).transpose(-3, -2)  # [..., n, n, b, b]: tile (i, j)
        below = torch.diagonal(tiles, offset=-1, dim1=-4, dim2=-3).movedim(-1, -3)[..., 0::2, :, :]  # A_21 tiles
        upper, lower = blocks[..., 0::2, :, :], blocks[..., 1::2, :, :]
        corner = -lower @ below @ upper
        top = torch.cat([upper, torch.zeros_like(upper)], dim=-1)
        bottom = torch.cat([corner, lower], dim=-1)
        blocks = torch.cat([top, bottom], dim=-2)  # [..., n / 2, 2b, 2b]
        b *= 2
    return blocks[..., 0, :C, :C]


def _to_chunks(x: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """[B, T, H, D] -> [B, H, N, C, D], zero-padding T up to a multiple of the chunk size."""
    B, T, H, D = x.shape
    padding = -T % chunk_size
    x = torch.nn.functional.pad(x, (0, 0, 0, 0, 0, padding))
    return x.view(B, (T + padding) // chunk_size, chunk_size, H, D).permute(0, 3, 1, 2, 4)


def _from_chunks(x: torch.Tensor, length: int) -> torch.Tensor:
    """[B, H, N, C, D] -> [B, T, H, D], dropping the padding."""
    B, H, N, C, D = x.shape
    return x.permute(0, 2, 3, 1, 4).reshape(B, N * C, H, D)[:, :length]
