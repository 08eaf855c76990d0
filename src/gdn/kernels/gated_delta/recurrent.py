"""Step-by-step gated delta rule in Triton, for decoding and short sequences.

One program per (sequence, head, V tile) keeps S [K, BV] in fp32 registers and applies, token by token,
    S <- exp(g_t) S;  S <- S + k_t (beta_t (v_t - S^T k_t))^T;  o_t = S^T (scale q_t)
(reference.py's form of S_t = exp(g_t)(I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T). All arithmetic is fp32;
only o is written in the input dtype. The kernel is forward-only: when autograd needs gradients the call goes to
the chunked kernels, which compute the same function and have a backward.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from gdn.kernels.gated_delta._common import autotune, check_inputs, chunk_layout, new_buffer, pow2_at_least_16
from gdn.kernels.gated_delta._l2norm import EPS
from gdn.kernels.gated_delta.chunk import chunk_gated_delta_rule


@autotune([triton.Config({"BV": bv}, num_warps=w) for bv in (16, 32, 64) for w in (1, 2, 4)], key=["K", "V"])
@triton.jit
def recurrent_forward_kernel(
    q_ptr, k_ptr, v_ptr, g_ptr, beta_ptr, h0_ptr, o_ptr, ht_ptr,
    cu_seqlens_ptr, scale,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_L2NORM: tl.constexpr, HAS_H0: tl.constexpr, STORE_FINAL: tl.constexpr, EPS: tl.constexpr,
):
    i_v, i_n, i_h = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    start, end = tl.load(cu_seqlens_ptr + i_n), tl.load(cu_seqlens_ptr + i_n + 1)
    ck, cv = tl.arange(0, BK), i_v * BV + tl.arange(0, BV)
    k_mask, v_mask = ck < K, cv < V
    state_offs = (i_h * K + ck[:, None]) * V + cv[None, :]
    state_mask = k_mask[:, None] & v_mask[None, :]
    s = tl.zeros((BK, BV), dtype=tl.float32)
    if HAS_H0:
        s += tl.load(h0_ptr + i_n * H * K * V + state_offs, mask=state_mask, other=0.0)
    for t in range(start, end):
        q = tl.load(q_ptr + (t * H + i_h) * K + ck, mask=k_mask, other=0.0).to(tl.float32)
        k = tl.load(k_ptr + (t * H + i_h) * K + ck, mask=k_mask, other=0.0).to(tl.float32)
        if USE_L2NORM:
            q = q / tl.sqrt(tl.sum(q * q) + EPS)
            k = k / tl.sqrt(tl.sum(k * k) + EPS)
        v = tl.load(v_ptr + (t * H + i_h) * V + cv, mask=v_mask, other=0.0).to(tl.float32)
        s *= tl.exp(tl.load(g_ptr + t * H + i_h).to(tl.float32))
        delta = tl.load(beta_ptr + t * H + i_h).to(tl.float32) * (v - tl.sum(s * k[:, None], 0))
        s += k[:, None] * delta[None, :]
        o = tl.sum(s * (q * scale)[:, None], 0)
        tl.store(o_ptr + (t * H + i_h) * V + cv, o.to(o_ptr.dtype.element_ty), mask=v_mask)
    if STORE_FINAL:
        tl.store(ht_ptr + i_n * H * K * V + state_offs, s, mask=state_mask)


def recurrent_gated_delta_rule(
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
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Same arguments, layout and result as `chunk_gated_delta_rule`, computed token by token (decode)."""
    inputs = (q, k, v, g, beta, initial_state)
    if torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in inputs):
        return chunk_gated_delta_rule(q, k, v, g, beta, scale, initial_state, output_final_state, cu_seqlens,
                                      use_qk_l2norm)
    check_inputs(q, k, v, g, beta, initial_state, cu_seqlens)
    B, T, H, K = q.shape
    V = v.shape[-1]
    scale = K**-0.5 if scale is None else scale
    layout = chunk_layout(B, T, cu_seqlens, q.device)
    q, k, v, g, beta = (x.contiguous() for x in (q, k, v, g, beta))
    h0 = initial_state.float().contiguous() if initial_state is not None else None
    o = new_buffer(v.shape, q.dtype, q.device)
    final = new_buffer((layout.num_seqs, H, K, V), torch.float32, q.device) if output_final_state else None
    recurrent_forward_kernel[lambda meta: (triton.cdiv(V, meta["BV"]), layout.num_seqs, H)](
        q, k, v, g, beta, h0, o, final, layout.cu_seqlens, scale,
        H=H, K=K, V=V, BK=pow2_at_least_16(K), USE_L2NORM=use_qk_l2norm, HAS_H0=h0 is not None,
        STORE_FINAL=output_final_state, EPS=EPS,
    )
    return o, final
