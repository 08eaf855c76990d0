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
import triton

from gdn.kernels.gated_delta._common import (
    CHUNK, EMPTY, LOG_DECAY_FLOOR, absent, check_inputs, chunk_layout,
)
from gdn.kernels.gated_delta._l2norm import l2norm_backward, l2norm_forward
from gdn.kernels.gated_delta._output import output_backward_dv, output_backward_qkw, output_forward
from gdn.kernels.gated_delta._state import state_backward, state_forward
from gdn.kernels.gated_delta._wy import wy_backward, wy_forward


# Two torch.library custom ops (namespace gdn), so that torch.compile treats each as one opaque node (their fake
# functions give the output shapes without running Triton) and op-level selective checkpointing can list the forward
# (torch.ops.gdn.chunk_gated_delta_rule_fwd.default) among the ops it saves. The forward op returns the residuals
# of the backward beside o and the final state: a custom op's backward sees only its inputs and outputs, and saving
# the op's outputs is what makes saving-not-recomputing possible. Absent tensors travel as empty tensors (a custom
# op cannot return None): the final state without output_final_state, q/k and their rstd without use_qk_l2norm
# (then the backward uses the inputs q and k themselves; returning them would alias an input, which ops forbid).


def chunk_rows_bound(B: int, T: int, cu_seqlens: torch.Tensor | None) -> int:
    """Rows of the per-chunk states h the forward op returns: the chunk count when dense; with cu_seqlens a bound
    that needs only its length (N sequences over T tokens make at most cdiv(T, 64) + N - 1 chunks: each of the
    N - 1 boundaries splits at most one chunk in two), so the op's output shape is known without its values."""
    if cu_seqlens is None:
        return B * triton.cdiv(T, CHUNK)
    return triton.cdiv(T, CHUNK) + cu_seqlens.shape[0] - 2


@torch.library.custom_op("gdn::chunk_gated_delta_rule_fwd", mutates_args=())
def chunk_gated_delta_rule_fwd(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, beta: torch.Tensor, scale: float,
    initial_state: torch.Tensor | None, output_final_state: bool, cu_seqlens: torch.Tensor | None,
    use_qk_l2norm: bool, recompute_states: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
           torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> o [B, T, H, V], final [N, H, K, V] (or empty), then the residuals q_n, k_n, q_rstd, k_rstd (empty
    without l2norm), gc, t, w, h, v_new (all five empty with recompute_states: the backward rebuilds them)."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    layout = chunk_layout(B, T, cu_seqlens, q.device)  # checks cu_seqlens' values: in the op, no graph break
    q, k, v = (x.reshape(B * T, H, x.shape[-1]).contiguous() for x in (q, k, v))
    g, beta = g.reshape(B * T, H).contiguous(), beta.reshape(B * T, H).contiguous()
    h0 = initial_state.float().contiguous() if initial_state is not None else None
    q_n, k_n = q.new_empty(EMPTY), k.new_empty(EMPTY)  # separate tensors: op outputs may not alias each other
    q_rstd, k_rstd = absent(q), absent(k)
    if use_qk_l2norm:
        q_n, q_rstd = l2norm_forward(q)
        k_n, k_rstd = l2norm_forward(k)
        q, k = q_n, k_n
    gc, t, w, u = wy_forward(k, v, g, beta, layout)
    h_rows = chunk_rows_bound(B, T, cu_seqlens)
    h, v_new, final = state_forward(k, w, u, gc, h0, output_final_state, layout, h_rows)
    o = output_forward(q, k, v_new, h, gc, scale, layout)
    final = final if final is not None else absent(q)
    if recompute_states:
        gc, t, w, h, v_new = (x.new_empty(EMPTY) for x in (gc, t, w, h, v_new))
    return o.view(B, T, H, V), final, q_n, k_n, q_rstd, k_rstd, gc, t, w, h, v_new


@chunk_gated_delta_rule_fwd.register_fake
def _(q, k, v, g, beta, scale, initial_state, output_final_state, cu_seqlens, use_qk_l2norm, recompute_states):
    B, T, H, K = q.shape
    V = v.shape[-1]
    n_chunks = chunk_rows_bound(B, T, cu_seqlens)
    n_seqs = B if cu_seqlens is None else cu_seqlens.shape[0] - 1
    f32 = dict(dtype=torch.float32)
    normed, rstd = ((B * T, H, K), (B * T, H)) if use_qk_l2norm else (EMPTY, EMPTY)
    kept = (lambda *shape: EMPTY) if recompute_states else (lambda *shape: shape)
    return (
        q.new_empty(B, T, H, V),
        q.new_empty((n_seqs, H, K, V) if output_final_state else EMPTY, **f32),
        q.new_empty(normed), k.new_empty(normed), q.new_empty(rstd, **f32), k.new_empty(rstd, **f32),
        q.new_empty(kept(B * T, H), **f32),                # gc
        q.new_empty(kept(B * T, H, CHUNK), **f32),         # t
        k.new_empty(kept(B * T, H, K)),                    # w
        k.new_empty(kept(n_chunks, H, K, V)),              # h
        v.new_empty(kept(B * T, H, V)),                    # v_new
    )


@torch.library.custom_op("gdn::chunk_gated_delta_rule_bwd", mutates_args=())
def chunk_gated_delta_rule_bwd(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, gc: torch.Tensor, t: torch.Tensor,
    w: torch.Tensor, h: torch.Tensor, v_new: torch.Tensor, q_rstd: torch.Tensor, k_rstd: torch.Tensor,
    do: torch.Tensor, d_final: torch.Tensor | None, scale: float, cu_seqlens: torch.Tensor | None,
    g: torch.Tensor, initial_state: torch.Tensor | None, use_qk_l2norm: bool, recompute_states: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k: the normalised ones with use_qk_l2norm, else the inputs; gc, t, w, h, v_new empty with
    recompute_states (rebuilt here from k, v, g, beta and the initial state). -> dq, dk, dv, dg, dbeta, dh0 (empty
    without an initial state)."""
    B, T, H, K = do.shape[0], do.shape[1], q.shape[-2], q.shape[-1]
    V = v.shape[-1]
    layout = chunk_layout(B, T, cu_seqlens, do.device)
    q, k, v = (x.reshape(B * T, H, x.shape[-1]).contiguous() for x in (q, k, v))
    beta = beta.reshape(B * T, H).contiguous()
    do = do.reshape(B * T, H, V).contiguous()
    d_final = d_final.float().contiguous() if d_final is not None else None
    has_h0 = initial_state is not None
    if recompute_states:
        gc, t, w, u = wy_forward(k, v, g.reshape(B * T, H).contiguous(), beta, layout)
        h0 = initial_state.float().contiguous() if has_h0 else None
        h, v_new, _ = state_forward(k, w, u, gc, h0, False, layout)
    dv_intra = output_backward_dv(q, k, gc, do, scale, layout)
    dh, dv_new, dh0 = state_backward(q, k, w, gc, do, dv_intra, d_final, scale, has_h0, layout)
    dq, dk, dw, dgc = output_backward_qkw(q, k, v_new, h, dh, gc, do, dv_new, scale, True, layout)
    dk, dv, dbeta, dg = wy_backward(k, v, beta, gc, t, dw, dv_new, dk, dgc, layout)
    if use_qk_l2norm:
        dq = l2norm_backward(q, q_rstd, dq, q.dtype)
        dk = l2norm_backward(k, k_rstd, dk, k.dtype)
    return (
        dq.to(q.dtype).view(B, T, H, K),
        dk.to(k.dtype).view(B, T, H, K),
        dv.to(v.dtype).view(B, T, H, V),
        dg.to(g.dtype).view(B, T, H),
        dbeta.to(beta.dtype).view(B, T, H),
        dh0.to(initial_state.dtype) if has_h0 else do.new_empty(EMPTY),
    )


@chunk_gated_delta_rule_bwd.register_fake
def _(q, k, v, beta, gc, t, w, h, v_new, q_rstd, k_rstd, do, d_final, scale, cu_seqlens, g, initial_state,
      use_qk_l2norm, recompute_states):
    B, T, H, V = do.shape
    K = q.shape[-1]
    return (
        q.new_empty(B, T, H, K), k.new_empty(B, T, H, K), v.new_empty(B, T, H, V),
        g.new_empty(B, T, H), beta.new_empty(B, T, H),
        initial_state.new_empty(initial_state.shape) if initial_state is not None else do.new_empty(EMPTY),
    )


def _setup_context(ctx, inputs, output):
    q, k, v, g, beta, scale, initial_state, output_final_state, cu_seqlens, use_qk_l2norm, recompute_states = inputs
    _, _, q_n, k_n, q_rstd, k_rstd, gc, t, w, h, v_new = output
    if use_qk_l2norm:
        q, k = q_n, k_n
    ctx.save_for_backward(q, k, v, g, beta, gc, t, w, h, v_new, q_rstd, k_rstd, initial_state, cu_seqlens)
    ctx.scale, ctx.use_qk_l2norm, ctx.output_final_state = scale, use_qk_l2norm, output_final_state
    ctx.recompute_states, ctx.o_shape = recompute_states, output[0].shape
    # The residual outputs never get a gradient: unmaterialised, they arrive as None instead of zero tensors of
    # their size (0.9 GiB written per call at 8 x 4096 x 16 x 128, issue 15).
    ctx.set_materialize_grads(False)


def _backward(ctx, do, d_final, *_residual_grads):
    q, k, v, g, beta, gc, t, w, h, v_new, q_rstd, k_rstd, initial_state, cu_seqlens = ctx.saved_tensors
    if do is None:  # only the final state reaches the loss
        do = v.new_zeros(ctx.o_shape)
    dq, dk, dv, dg, dbeta, dh0 = chunk_gated_delta_rule_bwd(
        q, k, v, beta, gc, t, w, h, v_new, q_rstd, k_rstd, do.contiguous(),
        d_final if ctx.output_final_state else None, ctx.scale, cu_seqlens, g, initial_state,
        ctx.use_qk_l2norm, ctx.recompute_states,
    )
    return dq, dk, dv, dg, dbeta, None, dh0 if initial_state is not None else None, None, None, None, None


chunk_gated_delta_rule_fwd.register_autograd(_backward, setup_context=_setup_context)


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
    g = g.clamp_min(LOG_DECAY_FLOOR)  # _common.LOG_DECAY_FLOOR says why
    o, final, *_residuals = chunk_gated_delta_rule_fwd(
        q, k, v, g, beta, float(scale), initial_state, output_final_state, cu_seqlens, use_qk_l2norm,
        recompute_states,
    )
    return o, (final if output_final_state else None)
