"""Chunked gated delta rule in Triton: training forward and backward, dense or varlen (cu_seqlens).

Forward, per chunk of 64 tokens (gated-deltanet-facts.md, "Chunked training algorithm"):
    1. wy_forward      gc = chunk-local cumsum of g; T = (I + A)^-1; W, U         chunk-parallel  (_wy.py)
    2. state_forward   S per chunk start; V_new = U - W S                        sequential      (_state.py)
    3. output_forward  O = scale [(exp(gc) o Q) S + (Q K^T o M) V_new]           chunk-parallel  (_output.py)
Backward runs the same stages in reverse: dV_intra (chunk-parallel), the reverse state pass (dS per chunk,
dV_new), dq/dk/dW/dgc (chunk-parallel), then the WY backward (dk, dv, dbeta, dg). By default the forward's gc, T,
W, per-chunk states h and V_new are kept for the backward. With recompute_states=True only g and the initial state
are, and the backward reruns stages 1-2 to rebuild them: per token and head, K V / 64 + K + V fewer values kept
(2.6K at K = 256, V = 512: 31 KB per token in a 6-head bf16 layer) for about a quarter more time (the WY and state
forward passes again), as FLA does.
"""
from __future__ import annotations

import torch

from gdn.kernels.gated_delta._common import check_inputs, chunk_layout
from gdn.kernels.gated_delta._l2norm import l2norm_backward, l2norm_forward
from gdn.kernels.gated_delta._output import output_backward_dv, output_backward_qkw, output_forward
from gdn.kernels.gated_delta._state import state_backward, state_forward
from gdn.kernels.gated_delta._wy import wy_backward, wy_forward


class ChunkGatedDeltaRule(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, g, beta, scale, initial_state, output_final_state, cu_seqlens, use_qk_l2norm,
                recompute_states):
        B, T, H, K = q.shape
        V = v.shape[-1]
        layout = chunk_layout(B, T, cu_seqlens, q.device)
        q, k, v = (x.reshape(B * T, H, x.shape[-1]).contiguous() for x in (q, k, v))
        g, beta = g.reshape(B * T, H).contiguous(), beta.reshape(B * T, H).contiguous()
        h0 = initial_state.float().contiguous() if initial_state is not None else None
        q_rstd = k_rstd = None
        if use_qk_l2norm:
            q, q_rstd = l2norm_forward(q)
            k, k_rstd = l2norm_forward(k)
        gc, t, w, u = wy_forward(k, v, g, beta, layout)
        h, v_new, final = state_forward(k, w, u, gc, h0, output_final_state, layout)
        o = output_forward(q, k, v_new, h, gc, scale, layout)
        kept = (g, h0) if recompute_states else (gc, t, w, h, v_new)
        ctx.save_for_backward(q, k, v, beta, q_rstd, k_rstd, *kept)
        ctx.recompute_states = recompute_states
        ctx.layout, ctx.scale, ctx.shape = layout, scale, (B, T, H, K, V)
        ctx.dtypes = (g.dtype, beta.dtype, None if initial_state is None else initial_state.dtype)
        return o.view(B, T, H, V), final

    @staticmethod
    def backward(ctx, do, d_final):
        q, k, v, beta, q_rstd, k_rstd, *kept = ctx.saved_tensors
        layout, scale = ctx.layout, ctx.scale
        if ctx.recompute_states:
            g, h0 = kept
            gc, t, w, u = wy_forward(k, v, g, beta, layout)
            h, v_new, _ = state_forward(k, w, u, gc, h0, False, layout)
        else:
            gc, t, w, h, v_new = kept
        B, T, H, K, V = ctx.shape
        g_dtype, beta_dtype, h0_dtype = ctx.dtypes
        do = do.reshape(B * T, H, V).contiguous()
        d_final = d_final.float().contiguous() if d_final is not None else None
        dv_intra = output_backward_dv(q, k, gc, do, scale, layout)
        dh, dv_new, dh0 = state_backward(q, k, w, gc, do, dv_intra, d_final, scale, h0_dtype is not None, layout)
        dq, dk, dw, dgc = output_backward_qkw(q, k, v_new, h, dh, gc, do, dv_new, scale, True, layout)
        dk, dv, dbeta, dg = wy_backward(k, v, beta, gc, t, dw, dv_new, dk, dgc, layout)
        if q_rstd is not None:
            dq = l2norm_backward(q, q_rstd, dq, q.dtype)
            dk = l2norm_backward(k, k_rstd, dk, k.dtype)
        return (
            dq.to(q.dtype).view(B, T, H, K),
            dk.to(k.dtype).view(B, T, H, K),
            dv.view(B, T, H, V),
            dg.to(g_dtype).view(B, T, H),
            dbeta.to(beta_dtype).view(B, T, H),
            None,
            None if dh0 is None else dh0.to(h0_dtype),
            None,
            None,
            None,
            None,
        )


def chunk_gated_delta_rule(
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
    recompute_states: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gated delta rule over whole sequences, chunk by chunk (64 tokens); differentiable in every tensor input.

    q, k [B, T, H, K]; v [B, T, H, V]; g [B, T, H] natural-log decay (fp32); beta [B, T, H]; initial_state and
    the returned final state [N, H, K, V] fp32, N = B, or the number of sequences of cu_seqlens (then B = 1).
    Returns o [B, T, H, V] in q's dtype and the final state (None unless output_final_state).
    recompute_states: keep less for the backward and rebuild the chunk states there (module docstring).
    """
    check_inputs(q, k, v, g, beta, initial_state, cu_seqlens)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    return ChunkGatedDeltaRule.apply(
        q, k, v, g, beta, scale, initial_state, output_final_state, cu_seqlens, use_qk_l2norm, recompute_states
    )
