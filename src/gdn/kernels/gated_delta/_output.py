"""Chunk-parallel output of chunked linear recurrences with a scalar per-token decay, and its backward.

Per chunk, with S the state at the chunk's start (from the state pass), gc the chunk-local cumulative log decay
and M_ij = exp(gc_i - gc_j) for i >= j (0 above the diagonal):
    O = scale [ (exp(gc) o Q) S + (Q K^T o M) V_new ]
Shared with Mamba2's SSD (there V_new is dt x and there is no W). The backward, with dS the gradient of the
chunk's end state S' = exp(gl) S + (exp(gl - gc) o K)^T V_new and dV_new from the reverse state pass:
    dV_intra = scale (Q K^T o M)^T dO                         (the reverse state pass adds the rest)
    dP = scale dO V_new^T o M
    dQ = scale exp(gc) o (dO S^T) + dP K
    dK = exp(gl - gc) o (V_new dS^T) + dP^T Q
    dW = -dV_new S^T                                           (delta rule only)
    dgc_i = q_i . dq_i - k_i . dk_i   (+ exp(gl) <S, dS> + sum_j k_j . dK_state_j at the chunk's last row)
The last line follows from every gc entering as a difference gc_i - gc_j, or as gl - gc_j for the state.
With Q, K shared by a group of heads (the SSD), dP K and dP^T Q are linear in dP: one product with the heads' dP
summed, and the per-head dgc terms q_i . (dP K)_i, k_i . (dP^T Q)_i are the row and column sums of dP o Q K^T.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from gdn.kernels.gated_delta._common import (
    CHUNK,
    ChunkLayout,
    chunk_rows,
    decay_matrix,
    dot_precision,
    new_buffer,
    qk_head,
    tile_width,
)

_OUTPUT_BV = 128  # V tile of the output kernels (4 warps); measured best on an H100 at K/V 128/128 and 256/512


@triton.jit
def causal_decay(gc, valid, BT: tl.constexpr):
    """M_ij = exp(gc_i - gc_j) for j <= i inside the sequence, else 0 (decay_matrix says why it cannot overflow).
    The other exponents of these kernels: exp(gc) and exp(gl - gc) with gl the chunk's last gc: their arguments are
    <= 0 on the sequence's rows; rows past its end load gc = 0, where they are exp(0) and exp(gl) <= 1."""
    return decay_matrix(gc, valid, False, BT)


@triton.jit
def output_forward_kernel(
    q_ptr, k_ptr, v_new_ptr, h_ptr, gc_ptr, o_ptr,
    cu_seqlens_ptr, chunk_index_ptr, scale,
    H: tl.constexpr, QK_H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
    BV: tl.constexpr, PRECISION: tl.constexpr,
):
    i_v, i_c, i_h = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    rows, valid = chunk_rows(cu_seqlens_ptr, chunk_index_ptr, i_c, BT)
    cv = i_v * BV + tl.arange(0, BV)
    dtype = k_ptr.dtype.element_ty
    o_inter = tl.zeros((BT, BV), dtype=tl.float32)
    qk = tl.zeros((BT, BT), dtype=tl.float32)
    for k0 in range(0, K, BK):
        ck = k0 + tl.arange(0, BK)
        k_offs = (rows[:, None] * QK_H + qk_head(i_h, H, QK_H)) * K + ck[None, :]
        k_mask = valid[:, None] & (ck < K)
        q = tl.load(q_ptr + k_offs, mask=k_mask, other=0.0)
        k = tl.load(k_ptr + k_offs, mask=k_mask, other=0.0)
        s = tl.load(h_ptr + ((i_c * H + i_h) * K + ck[:, None]) * V + cv[None, :],
                    mask=(ck[:, None] < K) & (cv[None, :] < V), other=0.0)
        o_inter += tl.dot(q, s, input_precision=PRECISION)
        qk += tl.dot(q, tl.trans(k), input_precision=PRECISION)
    gc = tl.load(gc_ptr + rows * H + i_h, mask=valid, other=0.0)
    p = (qk * causal_decay(gc, valid, BT)).to(dtype)
    v_offs = (rows[:, None] * H + i_h) * V + cv[None, :]
    v_mask = valid[:, None] & (cv < V)
    v_new = tl.load(v_new_ptr + v_offs, mask=v_mask, other=0.0)
    o = scale * (o_inter * tl.exp(gc)[:, None] + tl.dot(p, v_new, input_precision=PRECISION))
    tl.store(o_ptr + v_offs, o.to(o_ptr.dtype.element_ty), mask=v_mask)


@triton.jit
def output_backward_dv_kernel(
    q_ptr, k_ptr, gc_ptr, do_ptr, dv_ptr,
    cu_seqlens_ptr, chunk_index_ptr, scale,
    H: tl.constexpr, QK_H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
    BV: tl.constexpr, PRECISION: tl.constexpr,
):
    """dV_intra = scale (Q K^T o M)^T dO."""
    i_v, i_c, i_h = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    rows, valid = chunk_rows(cu_seqlens_ptr, chunk_index_ptr, i_c, BT)
    cv = i_v * BV + tl.arange(0, BV)
    kq = tl.zeros((BT, BT), dtype=tl.float32)
    for k0 in range(0, K, BK):
        ck = k0 + tl.arange(0, BK)
        k_offs = (rows[:, None] * QK_H + qk_head(i_h, H, QK_H)) * K + ck[None, :]
        k_mask = valid[:, None] & (ck < K)
        q = tl.load(q_ptr + k_offs, mask=k_mask, other=0.0)
        k = tl.load(k_ptr + k_offs, mask=k_mask, other=0.0)
        kq += tl.dot(k, tl.trans(q), input_precision=PRECISION)
    gc = tl.load(gc_ptr + rows * H + i_h, mask=valid, other=0.0)
    p_t = (kq * tl.trans(causal_decay(gc, valid, BT)) * scale).to(k_ptr.dtype.element_ty)
    v_offs = (rows[:, None] * H + i_h) * V + cv[None, :]
    v_mask = valid[:, None] & (cv < V)
    do = tl.load(do_ptr + v_offs, mask=v_mask, other=0.0)
    dv = tl.dot(p_t, do, input_precision=PRECISION)
    tl.store(dv_ptr + v_offs, dv.to(dv_ptr.dtype.element_ty), mask=v_mask)


@triton.jit
def _state_products(
    v_new_ptr, h_ptr, dh_ptr, do_ptr, dv_new_ptr, rows, valid, ck, i_c, i_h,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    HAS_W: tl.constexpr, PRECISION: tl.constexpr,
):
    """Value head i_h over one chunk and K tile ck, summed over V: dO S^T, V_new dS^T, -dV_new S^T (zeros without W)
    [BT, BK], dO V_new^T [BT, BT] (all fp32) and <S, dS>."""
    dq_inter = tl.zeros((BT, BK), dtype=tl.float32)
    dk_state = tl.zeros((BT, BK), dtype=tl.float32)
    dw = tl.zeros((BT, BK), dtype=tl.float32)
    dp = tl.zeros((BT, BT), dtype=tl.float32)
    s_ds = 0.0  # <S, dS> over this K tile
    for v0 in range(0, V, BV):
        cv = v0 + tl.arange(0, BV)
        v_offs = (rows[:, None] * H + i_h) * V + cv[None, :]
        v_mask = valid[:, None] & (cv < V)
        state_offs = ((i_c * H + i_h) * K + ck[:, None]) * V + cv[None, :]
        state_mask = (ck[:, None] < K) & (cv[None, :] < V)
        s = tl.load(h_ptr + state_offs, mask=state_mask, other=0.0)
        ds = tl.load(dh_ptr + state_offs, mask=state_mask, other=0.0)
        v_new = tl.load(v_new_ptr + v_offs, mask=v_mask, other=0.0)
        do = tl.load(do_ptr + v_offs, mask=v_mask, other=0.0)
        dq_inter += tl.dot(do, tl.trans(s), input_precision=PRECISION)
        dk_state += tl.dot(v_new, tl.trans(ds), input_precision=PRECISION)
        dp += tl.dot(do, tl.trans(v_new), input_precision=PRECISION)
        s_ds += tl.sum(s.to(tl.float32) * ds.to(tl.float32))
        if HAS_W:
            dv_new = tl.load(dv_new_ptr + v_offs, mask=v_mask, other=0.0)
            dw -= tl.dot(dv_new, tl.trans(s), input_precision=PRECISION)
    return dq_inter, dk_state, dw, dp, s_ds


@triton.jit
def output_backward_qkw_kernel(
    q_ptr, k_ptr, v_new_ptr, h_ptr, dh_ptr, gc_ptr, do_ptr, dv_new_ptr,
    dq_ptr, dk_ptr, dw_ptr, dgc_ptr,  # out: [T, H, K] x3 (dk fp32, dw if HAS_W), [NK, T, H] fp32 per K tile
    cu_seqlens_ptr, chunk_index_ptr, scale,
    T, H: tl.constexpr, QK_H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
    BV: tl.constexpr, HAS_W: tl.constexpr, PRECISION: tl.constexpr,
):
    i_k, i_c, i_h = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    rows, valid = chunk_rows(cu_seqlens_ptr, chunk_index_ptr, i_c, BT)
    ck = i_k * BK + tl.arange(0, BK)
    dtype = k_ptr.dtype.element_ty
    dq_inter, dk_state, dw, dp, s_ds = _state_products(v_new_ptr, h_ptr, dh_ptr, do_ptr, dv_new_ptr, rows, valid, ck,
                                                       i_c, i_h, H, K, V, BT, BK, BV, HAS_W, PRECISION)

    k_offs = (rows[:, None] * QK_H + qk_head(i_h, H, QK_H)) * K + ck[None, :]
    k_mask = valid[:, None] & (ck < K)
    q = tl.load(q_ptr + k_offs, mask=k_mask, other=0.0)
    k = tl.load(k_ptr + k_offs, mask=k_mask, other=0.0)
    grad_offs = (rows[:, None] * H + i_h) * K + ck[None, :]  # dq, dk, dw: one per head
    gc = tl.load(gc_ptr + rows * H + i_h, mask=valid, other=0.0)
    last = tl.max(tl.where(valid, rows, 0))
    gl = tl.load(gc_ptr + last * H + i_h)
    dp = (dp * causal_decay(gc, valid, BT) * scale).to(dtype)
    dq = dq_inter * (scale * tl.exp(gc))[:, None] + tl.dot(dp, k, input_precision=PRECISION)
    dk_state *= tl.where(valid, tl.exp(gl - gc), 0.0)[:, None]
    dk = dk_state + tl.dot(tl.trans(dp), q, input_precision=PRECISION)
    k_dk_state = tl.sum(k.to(tl.float32) * dk_state, 1)
    dgc = tl.sum(q.to(tl.float32) * dq, 1) - tl.sum(k.to(tl.float32) * dk, 1)
    dgc += tl.where(rows == last, tl.exp(gl) * s_ds + tl.sum(k_dk_state), 0.0)
    tl.store(dq_ptr + grad_offs, dq.to(dq_ptr.dtype.element_ty), mask=k_mask)
    tl.store(dk_ptr + grad_offs, dk, mask=k_mask)
    if HAS_W:
        tl.store(dw_ptr + grad_offs, dw.to(dw_ptr.dtype.element_ty), mask=k_mask)
    tl.store(dgc_ptr + (i_k * T + rows) * H + i_h, dgc, mask=valid)


@triton.jit
def output_backward_qk_grouped_kernel(
    q_ptr, k_ptr, v_ptr, h_ptr, dh_ptr, gc_ptr, do_ptr,
    dq_ptr, dk_ptr, dgc_ptr,  # out: [SPLITS, T, QK_H, K] fp32 x2 (sums over a program's heads), [NK, T, H] fp32
    cu_seqlens_ptr, chunk_index_ptr, scale,
    T, H: tl.constexpr, QK_H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
    BV: tl.constexpr, HEADS: tl.constexpr, PRECISION: tl.constexpr,
):
    # Program (i_k, i_c, group x split): HEADS consecutive value heads sharing one q, k. Their dP K and dP^T Q terms
    # are one product each with the heads' dP summed, and q_i . (dP K)_i = rowsum(dP o A)_i, k_i . (dP^T Q)_i =
    # colsum(dP o A)_i with A = Q K^T give each head's dgc without its own dq, dk.
    i_k, i_c, i_gs = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    SPLITS: tl.constexpr = H // QK_H // HEADS
    i_g, i_s = i_gs // SPLITS, i_gs % SPLITS
    rows, valid = chunk_rows(cu_seqlens_ptr, chunk_index_ptr, i_c, BT)
    ck = i_k * BK + tl.arange(0, BK)
    k_offs = (rows[:, None] * QK_H + i_g) * K + ck[None, :]
    k_mask = valid[:, None] & (ck < K)
    q = tl.load(q_ptr + k_offs, mask=k_mask, other=0.0)
    k = tl.load(k_ptr + k_offs, mask=k_mask, other=0.0)
    qk = tl.dot(q, tl.trans(k), input_precision=PRECISION)  # A over this K tile (dgc adds up over tiles)
    last = tl.max(tl.where(valid, rows, 0))
    dq = tl.zeros((BT, BK), dtype=tl.float32)
    dk = tl.zeros((BT, BK), dtype=tl.float32)
    dp_sum = tl.zeros((BT, BT), dtype=tl.float32)
    for j in range(HEADS):
        i_h = (i_g * SPLITS + i_s) * HEADS + j
        dq_inter, dk_state, _, dp, s_ds = _state_products(v_ptr, h_ptr, dh_ptr, do_ptr, do_ptr, rows, valid, ck, i_c,
                                                          i_h, H, K, V, BT, BK, BV, False, PRECISION)
        gc = tl.load(gc_ptr + rows * H + i_h, mask=valid, other=0.0)
        gl = tl.load(gc_ptr + last * H + i_h)
        dp = dp * causal_decay(gc, valid, BT) * scale
        dq_inter *= (scale * tl.exp(gc))[:, None]
        dk_state *= tl.where(valid, tl.exp(gl - gc), 0.0)[:, None]
        dp_a = dp * qk
        k_dk_state = tl.sum(k.to(tl.float32) * dk_state, 1)
        dgc = tl.sum(q.to(tl.float32) * dq_inter, 1) + tl.sum(dp_a, 1) - k_dk_state - tl.sum(dp_a, 0)
        dgc += tl.where(rows == last, tl.exp(gl) * s_ds + tl.sum(k_dk_state), 0.0)
        tl.store(dgc_ptr + (i_k * T + rows) * H + i_h, dgc, mask=valid)
        dq += dq_inter
        dk += dk_state
        dp_sum += dp
    dp_sum = dp_sum.to(k_ptr.dtype.element_ty)
    dq += tl.dot(dp_sum, k, input_precision=PRECISION)
    dk += tl.dot(tl.trans(dp_sum), q, input_precision=PRECISION)
    grad_offs = ((i_s * T + rows[:, None]) * QK_H + i_g) * K + ck[None, :]
    tl.store(dq_ptr + grad_offs, dq, mask=k_mask)
    tl.store(dk_ptr + grad_offs, dk, mask=k_mask)


def output_forward(q, k, v_new, h, gc, scale: float, layout: ChunkLayout):
    """q, k [T, QK_H, K] (QK_H groups of H / QK_H heads, or QK_H = H), v_new [T, H, V] -> o [T, H, V]."""
    total, QK_H, K = q.shape
    H, V = v_new.shape[1:]
    o = new_buffer(v_new.shape, q.dtype, q.device)
    BV = tile_width(V, _OUTPUT_BV)
    output_forward_kernel[(triton.cdiv(V, BV), layout.num_chunks, H)](
        q, k, v_new, h, gc, o, layout.cu_seqlens, layout.chunk_index, scale,
        H=H, QK_H=QK_H, K=K, V=V, BT=CHUNK, BK=tile_width(K, 64), BV=BV, PRECISION=dot_precision(q.dtype),
        num_warps=4,
    )
    return o


def output_backward_dv(q, k, gc, do, scale: float, layout: ChunkLayout):
    total, QK_H, K = q.shape
    H, V = do.shape[1:]
    dv = new_buffer(do.shape, q.dtype, q.device)
    BV = tile_width(V, _OUTPUT_BV)
    output_backward_dv_kernel[(triton.cdiv(V, BV), layout.num_chunks, H)](
        q, k, gc, do, dv, layout.cu_seqlens, layout.chunk_index, scale,
        H=H, QK_H=QK_H, K=K, V=V, BT=CHUNK, BK=tile_width(K, 64), BV=BV, PRECISION=dot_precision(q.dtype),
        num_warps=4,
    )
    return dv


def output_backward_qkw(q, k, v_new, h, dh, gc, do, dv_new, scale: float, has_w: bool, layout: ChunkLayout):
    """-> dq, dk (from the output and state paths; dk fp32), dw (None without W), dgc [T, H] fp32.

    dq and dw are written in the input dtype: both are rounded once more before their last use (the l2norm
    backward or the cast to q's dtype; bf16 products in the WY backward), so fp32 copies would only add traffic.
    With grouped q, k (QK_H < H) the gradients are still per head [T, H, K]: the caller sums each group's."""
    total, QK_H, K = q.shape
    H, V = do.shape[1:]
    BK = tile_width(K, 128)
    n_k = triton.cdiv(K, BK)
    dq = new_buffer((total, H, K), q.dtype, q.device)
    dk = new_buffer((total, H, K), torch.float32, q.device)
    dw = new_buffer((total, H, K), q.dtype, q.device) if has_w else None
    dgc = new_buffer((n_k, total, H), torch.float32, q.device)
    output_backward_qkw_kernel[(n_k, layout.num_chunks, H)](
        q, k, v_new, h, dh, gc, do, dv_new, dq, dk, dw, dgc, layout.cu_seqlens, layout.chunk_index, scale,
        total, H=H, QK_H=QK_H, K=K, V=V, BT=CHUNK, BK=BK, BV=tile_width(V, 64), HAS_W=has_w,
        PRECISION=dot_precision(q.dtype), num_warps=8,
    )
    return dq, dk, dw, dgc.sum(0)


_GROUPED_HEADS = 16  # value heads per program in output_backward_qk_grouped (at most; a divisor of H / QK_H)


def output_backward_qk_grouped(q, k, v, h, dh, gc, do, scale: float, layout: ChunkLayout):
    """Without W, for q, k shared by groups of heads (the SSD's C, B): -> dq, dk [T, QK_H, K] in q's dtype (each
    group's heads summed in fp32) and dgc [T, H] fp32. A program takes up to _GROUPED_HEADS heads of one group: the
    per-head [T, H, K] gradients of output_backward_qkw are never formed, and dP K, dP^T Q are one product each."""
    total, QK_H, K = q.shape
    H, V = do.shape[1:]
    heads = math.gcd(H // QK_H, _GROUPED_HEADS)
    splits = H // QK_H // heads
    BK = tile_width(K, 128)
    n_k = triton.cdiv(K, BK)
    dq = new_buffer((splits, total, QK_H, K), torch.float32, q.device)
    dk = new_buffer((splits, total, QK_H, K), torch.float32, q.device)
    dgc = new_buffer((n_k, total, H), torch.float32, q.device)
    output_backward_qk_grouped_kernel[(n_k, layout.num_chunks, QK_H * splits)](
        q, k, v, h, dh, gc, do, dq, dk, dgc, layout.cu_seqlens, layout.chunk_index, scale,
        total, H=H, QK_H=QK_H, K=K, V=V, BT=CHUNK, BK=BK, BV=tile_width(V, 64), HEADS=heads,
        PRECISION=dot_precision(q.dtype), num_warps=8, num_stages=3 if q.element_size() < 4 else 2,
    )  # fp32 at 3 stages wants 272 KB of shared memory (an H100 has 227 KB)
    return dq.sum(0).to(q.dtype), dk.sum(0).to(k.dtype), dgc.sum(0)
