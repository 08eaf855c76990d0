"""Gated linear attention without the delta rule (Mamba2-style): the use_delta=False ablation of the GDN mixer.

Per head:  S_t = alpha_t S_{t-1} + k_t v_t^T,   o_t = S_t^T (scale q_t).
Chunked like the delta rule minus the UT transform: with b_i the cumulative log gate inside a chunk
(gamma_i = exp(b_i), Gamma_ij = gamma_i / gamma_j) and S the state entering the chunk,
    O  = scale [ (gamma o Q) S + (Q K^T o Gamma o causal-incl-diag) V ]
    S' = gamma_C S + ((gamma_C / gamma) o K)^T V
Plain PyTorch (this ablation has no Triton kernel), differentiable by autograd, float32 or float64 inside.
"""
from __future__ import annotations

import torch

from gdn.kernels.gated_delta.reference import l2_normalize
from gdn.kernels.precision import without_autocast
from gdn.kernels.sequences import packed_as_rows


@without_autocast
def chunk_gated_linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    use_qk_l2norm: bool = False,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Layout as the gated delta rule without beta: q, k [B, T, H, K], v [B, T, H, V], g [B, T, H]. Runs in
    float32 (float64 for float64 inputs), under autocast too; o comes back in q's dtype."""
    K = q.shape[-1]
    out_dtype = q.dtype
    compute_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    q, k, v, g = (x.to(compute_dtype) for x in (q, k, v, g))
    if use_qk_l2norm:
        q, k = l2_normalize(q), l2_normalize(k)
    q = q * (K**-0.5 if scale is None else scale)
    state = None if initial_state is None else initial_state.to(compute_dtype)

    if cu_seqlens is None:
        o, final = _chunked(q, k, v, g, state, chunk_size)
    else:
        run = lambda *pieces: _chunked(*pieces, chunk_size)  # noqa: E731
        o, final = packed_as_rows(run, (q, k, v, g), state, cu_seqlens)
    return o.to(out_dtype), (final if output_final_state else None)


def _chunked(q, k, v, g, state, chunk_size):
    """One sequence per row, q already scaled; the last chunk is simply shorter. Returns o [B, T, H, V], S."""
    B, T, H, K = q.shape
    if state is None:
        state = q.new_zeros(B, H, K, v.shape[-1])
    outputs = [v.new_zeros(B, H, 0, v.shape[-1])]
    for start in range(0, T, chunk_size):
        q_c, k_c, v_c = (x[:, start : start + chunk_size].transpose(1, 2) for x in (q, k, v))  # [B, H, C, D]
        log_gamma = g[:, start : start + chunk_size].transpose(1, 2).cumsum(-1)  # [B, H, C]
        C = log_gamma.shape[-1]
        causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
        decay = (log_gamma[..., :, None] - log_gamma[..., None, :]).masked_fill(~causal, float("-inf")).exp()
        inter = (log_gamma.exp()[..., None] * q_c) @ state
        intra = ((q_c @ k_c.transpose(-1, -2)) * decay) @ v_c
        outputs.append(inter + intra)
        k_to_end = (log_gamma[..., -1:] - log_gamma).exp()[..., None] * k_c
        state = log_gamma[..., -1:, None].exp() * state + k_to_end.transpose(-1, -2) @ v_c
    return torch.cat(outputs, dim=2).transpose(1, 2), state
