"""WY representation of a chunk of delta-rule updates (gated-deltanet-facts.md, "Chunked training algorithm").

Per chunk of C = 64 tokens and per head, with gc the chunk-local cumulative log decay and Gamma = exp(gc):
    A = strictly-lower( diag(beta) (exp(gc_i - gc_j) o K K^T) )        (C x C)
    T = (I + A)^-1                                                       (UT transform)
    W = T diag(beta Gamma) K,   U = T diag(beta) V
`wy_forward` computes gc, T, W and U in one kernel per (chunk, head); `wy_backward` turns dW, dU into
dk, dv, dbeta and dg, adding the other paths' dk and dgc.

Precision: gc, A, T and all accumulators are fp32. With bf16/fp16 inputs, T and the products beta Gamma K,
beta V are rounded to the input dtype once, right before the tensor-core products that make W and U: one
rounding (relative 2^-9 for bf16) per operand, summed in fp32, so W and U carry about bf16 rounding error,
not a growing one. The backward does the same for T^T dU, T^T dW and the dk products, but builds dT and
dA = -T^T dT T^T from fp32 operands (tf32 products): dg takes dA o A through a row sum minus a column sum, which
cancel largely, and with bf16 dT its relative error reached 2e-2 to 7.6e-2 in 3 of 5 checks on an H100.
The backward takes K K^T in a loop of its own, not in the loop that builds dT: with both in one loop, Triton 3.6
on Hopper miscompiles the kernel at 4 and 8 warps. Its K K^T, a sum of exact bf16 products, came out 4.8e-2 off
float64 on an H200, and through dA o K K^T dg was 5e-2 and dbeta 2e-2 off on positive keys; with the loops apart
K K^T is off by 1.5e-7 and dg, dbeta by 1.4e-3, 1.1e-3 (bf16), for 1.5% more time. 2 warps also compute it right
(FLA pins its delta-rule WY backward to 2 warps on Hopper) but take 2.8x as long. benchmarks/wy_backward_probe.py
prints each variant's intermediates and times.
Exponents: decay_matrix masks every exp(gc_i - gc_j) to j < i inside the sequence before the exp; exp(gc) <= 1.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from gdn.kernels.gated_delta._common import (
    CHUNK, ChunkLayout, chunk_rows, decay_matrix, dot_precision, new_buffer, tile_width,
)


@triton.jit
def unit_lower_inverse(a, BT: tl.constexpr, PRECISION: tl.constexpr):
    """(I + A)^-1 of a strictly lower-triangular BT x BT matrix A (BT = 64), in fp32.

    The four 16 x 16 diagonal blocks D_b are inverted by forward substitution; with L the rest of A,
    I + A = (I + D)(I + N), N = (I + D)^-1 L strictly block-lower, so N^4 = 0 and
    (I + A)^-1 = (I - N + N^2 - N^3)(I + D)^-1 = (I - N)(I + N^2)(I + D)^-1.
    """
    NB: tl.constexpr = BT // 16
    blk = tl.arange(0, NB)
    same_block = blk[:, None, None, None] == blk[None, None, :, None]
    a4 = tl.reshape(a, (NB, 16, NB, 16))
    d = tl.sum(tl.where(same_block, a4, 0.0), axis=2)  # [NB, 16, 16]: the diagonal blocks
    r = tl.arange(0, 16)
    is_row = r[None, :, None]
    x = tl.where(is_row == r[None, None, :], 1.0, 0.0) + tl.zeros((NB, 16, 16), dtype=tl.float32)
    for i in range(1, 16):  # X[i, :] = e_i - sum_{j < i} D[i, j] X[j, :]; rows j < i are final
        d_row = tl.sum(tl.where(is_row == i, d, 0.0), axis=1)
        x = tl.where(is_row == i, x - tl.sum(d_row[:, :, None] * x, axis=1)[:, None, :], x)
    d_inv = tl.reshape(tl.where(same_block, x[:, :, None, :], 0.0), (BT, BT))
    n = tl.dot(d_inv, a - tl.reshape(tl.where(same_block, a4, 0.0), (BT, BT)), input_precision=PRECISION)
    rt = tl.arange(0, BT)
    eye = tl.where(rt[:, None] == rt[None, :], 1.0, 0.0)
    n2 = tl.dot(n, n, input_precision=PRECISION)
    return tl.dot(tl.dot(eye - n, eye + n2, input_precision=PRECISION), d_inv, input_precision=PRECISION)


@triton.jit
def wy_forward_kernel(
    k_ptr, v_ptr, g_ptr, beta_ptr,  # [T, H, K], [T, H, V], [T, H] log decay, [T, H]
    gc_ptr, t_ptr, w_ptr, u_ptr,  # out: [T, H] fp32, [T, H, BT] fp32, [T, H, K], [T, H, V]
    cu_seqlens_ptr, chunk_index_ptr,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, PRECISION: tl.constexpr,
):
    i_c, i_h = tl.program_id(0), tl.program_id(1)
    rows, valid = chunk_rows(cu_seqlens_ptr, chunk_index_ptr, i_c, BT)
    rt = tl.arange(0, BT)
    gc = tl.cumsum(tl.load(g_ptr + rows * H + i_h, mask=valid, other=0.0).to(tl.float32), 0)
    tl.store(gc_ptr + rows * H + i_h, gc, mask=valid)
    beta = tl.load(beta_ptr + rows * H + i_h, mask=valid, other=0.0).to(tl.float32)

    kk = tl.zeros((BT, BT), dtype=tl.float32)
    for k0 in range(0, K, BK):
        ck = k0 + tl.arange(0, BK)
        kb = tl.load(k_ptr + (rows[:, None] * H + i_h) * K + ck[None, :], mask=valid[:, None] & (ck < K), other=0.0)
        kk += tl.dot(kb, tl.trans(kb), input_precision=PRECISION)
    a = beta[:, None] * decay_matrix(gc, valid, True, BT) * kk
    t = unit_lower_inverse(a, BT, PRECISION)
    tl.store(t_ptr + (rows[:, None] * H + i_h) * BT + rt[None, :], t, mask=valid[:, None])

    t_in = t.to(k_ptr.dtype.element_ty)
    k_scale = beta * tl.exp(gc)
    for k0 in range(0, K, BK):
        ck = k0 + tl.arange(0, BK)
        offs = (rows[:, None] * H + i_h) * K + ck[None, :]
        mask = valid[:, None] & (ck < K)
        kb = tl.load(k_ptr + offs, mask=mask, other=0.0)
        w = tl.dot(t_in, (kb * k_scale[:, None]).to(t_in.dtype), input_precision=PRECISION)
        tl.store(w_ptr + offs, w.to(w_ptr.dtype.element_ty), mask=mask)
    for v0 in range(0, V, BV):
        cv = v0 + tl.arange(0, BV)
        offs = (rows[:, None] * H + i_h) * V + cv[None, :]
        mask = valid[:, None] & (cv < V)
        vb = tl.load(v_ptr + offs, mask=mask, other=0.0)
        u = tl.dot(t_in, (vb * beta[:, None]).to(t_in.dtype), input_precision=PRECISION)
        tl.store(u_ptr + offs, u.to(u_ptr.dtype.element_ty), mask=mask)


@triton.jit
def wy_backward_kernel(
    k_ptr, v_ptr, beta_ptr, gc_ptr, t_ptr,  # forward inputs and saved gc, T
    dw_ptr, du_ptr,  # [T, H, K], [T, H, V]: gradients of W and U
    dk_other_ptr, dgc_other_ptr,  # [T, H, K], [T, H] fp32: dk and dL/dgc from the output and state paths
    dk_ptr, dv_ptr, dbeta_ptr, dg_ptr,  # out: [T, H, K], [T, H, V], [T, H] fp32, [T, H] fp32
    cu_seqlens_ptr, chunk_index_ptr,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, PRECISION: tl.constexpr,
):
    i_c, i_h = tl.program_id(0), tl.program_id(1)
    rows, valid = chunk_rows(cu_seqlens_ptr, chunk_index_ptr, i_c, BT)
    rt = tl.arange(0, BT)
    gc = tl.load(gc_ptr + rows * H + i_h, mask=valid, other=0.0)
    beta = tl.load(beta_ptr + rows * H + i_h, mask=valid, other=0.0).to(tl.float32)
    k_scale = beta * tl.exp(gc)
    t = tl.load(t_ptr + (rows[:, None] * H + i_h) * BT + rt[None, :], mask=valid[:, None], other=0.0)
    t_t = tl.trans(t)
    dtype = k_ptr.dtype.element_ty  # operand dtype of the T^T x and dk products; dT, dA stay fp32 (module doc)
    t_t_in = t_t.to(dtype)

    # dT = dW (diag(beta Gamma) K)^T + dU (diag(beta) V)^T; dV = diag(beta) T^T dU
    d_t = tl.zeros((BT, BT), dtype=tl.float32)
    kk = tl.zeros((BT, BT), dtype=tl.float32)
    for k0 in range(0, K, BK):
        ck = k0 + tl.arange(0, BK)
        offs = (rows[:, None] * H + i_h) * K + ck[None, :]
        mask = valid[:, None] & (ck < K)
        kb = tl.load(k_ptr + offs, mask=mask, other=0.0)
        dwb = tl.load(dw_ptr + offs, mask=mask, other=0.0)
        d_t += tl.dot(dwb.to(tl.float32), tl.trans(kb * k_scale[:, None]), input_precision=PRECISION)
    for k0 in range(0, K, BK):  # apart from the loop above: together they miscompile on Hopper (module doc)
        ck = k0 + tl.arange(0, BK)
        kb = tl.load(k_ptr + (rows[:, None] * H + i_h) * K + ck[None, :], mask=valid[:, None] & (ck < K), other=0.0)
        kk += tl.dot(kb, tl.trans(kb), input_precision=PRECISION)
    dbeta = tl.zeros((BT,), dtype=tl.float32)
    for v0 in range(0, V, BV):
        cv = v0 + tl.arange(0, BV)
        offs = (rows[:, None] * H + i_h) * V + cv[None, :]
        mask = valid[:, None] & (cv < V)
        vb = tl.load(v_ptr + offs, mask=mask, other=0.0)
        dub = tl.load(du_ptr + offs, mask=mask, other=0.0)
        d_t += tl.dot(dub.to(tl.float32), tl.trans(vb * beta[:, None]), input_precision=PRECISION)
        t_du = tl.dot(t_t_in, dub, input_precision=PRECISION)
        tl.store(dv_ptr + offs, (t_du * beta[:, None]).to(dv_ptr.dtype.element_ty), mask=mask)
        dbeta += tl.sum(vb.to(tl.float32) * t_du, 1)

    # T = (I + A)^-1  =>  dA = -T^T dT T^T, kept on the strictly lower part where A lives
    d_a = -tl.dot(tl.dot(t_t, d_t, input_precision=PRECISION), t_t, input_precision=PRECISION)
    d_a = d_a * decay_matrix(gc, valid, True, BT)  # now dL/d(beta_i k_i.k_j), i > j
    d_a_kk = d_a * kk
    dbeta += tl.sum(d_a_kk, 1)
    d_log_a = d_a_kk * beta[:, None]  # dL/d(gc_i - gc_j)
    dgc = tl.load(dgc_other_ptr + rows * H + i_h, mask=valid, other=0.0) + tl.sum(d_log_a, 1) - tl.sum(d_log_a, 0)
    d_kk = (d_a * beta[:, None]).to(dtype)  # dL/d(k_i . k_j)

    for k0 in range(0, K, BK):
        ck = k0 + tl.arange(0, BK)
        offs = (rows[:, None] * H + i_h) * K + ck[None, :]
        mask = valid[:, None] & (ck < K)
        kb = tl.load(k_ptr + offs, mask=mask, other=0.0)
        t_dw = tl.dot(t_t_in, tl.load(dw_ptr + offs, mask=mask, other=0.0), input_precision=PRECISION)
        k_dw = tl.sum(kb.to(tl.float32) * t_dw, 1)
        dbeta += tl.exp(gc) * k_dw
        dgc += k_scale * k_dw
        dk = tl.load(dk_other_ptr + offs, mask=mask, other=0.0) + t_dw * k_scale[:, None]
        dk += tl.dot(d_kk, kb, input_precision=PRECISION) + tl.dot(tl.trans(d_kk), kb, input_precision=PRECISION)
        tl.store(dk_ptr + offs, dk, mask=mask)

    # gc_i = sum_{s <= i} g_s inside the chunk, so dg_s = sum_{i >= s} dgc_i
    dg = tl.cumsum(tl.where(valid, dgc, 0.0), 0, reverse=True)
    tl.store(dg_ptr + rows * H + i_h, dg, mask=valid)
    tl.store(dbeta_ptr + rows * H + i_h, dbeta, mask=valid)


def _tiles(K: int, V: int) -> tuple[int, int]:
    return tile_width(K, 64), tile_width(V, 64)


def wy_forward(k, v, g, beta, layout: ChunkLayout):
    """k [T, H, K], v [T, H, V], g, beta [T, H] -> gc [T, H] fp32, T [T, H, 64] fp32, W [T, H, K], U [T, H, V]."""
    total, H, K = k.shape
    V = v.shape[-1]
    gc = new_buffer((total, H), torch.float32, k.device)
    t = new_buffer((total, H, CHUNK), torch.float32, k.device)
    w = new_buffer(k.shape, k.dtype, k.device)
    u = new_buffer(v.shape, v.dtype, k.device)
    BK, BV = _tiles(K, V)
    wy_forward_kernel[(layout.num_chunks, H)](
        k, v, g, beta, gc, t, w, u, layout.cu_seqlens, layout.chunk_index,
        H=H, K=K, V=V, BT=CHUNK, BK=BK, BV=BV, PRECISION=dot_precision(k.dtype), num_warps=4,
    )
    return gc, t, w, u


def wy_backward(k, v, beta, gc, t, dw, du, dk_other, dgc_other, layout: ChunkLayout):
    """Adds the WY paths to the other paths' dk and dgc; returns dk, dv (input dtype), dbeta, dg (fp32)."""
    total, H, K = k.shape
    V = v.shape[-1]
    dk = new_buffer(k.shape, k.dtype, k.device)
    dv = new_buffer(v.shape, v.dtype, k.device)
    dbeta = new_buffer((total, H), torch.float32, k.device)
    dg = new_buffer((total, H), torch.float32, k.device)
    BK, BV = _tiles(K, V)
    wy_backward_kernel[(layout.num_chunks, H)](
        k, v, beta, gc, t, dw, du, dk_other, dgc_other, dk, dv, dbeta, dg, layout.cu_seqlens, layout.chunk_index,
        H=H, K=K, V=V, BT=CHUNK, BK=BK, BV=BV, PRECISION=dot_precision(k.dtype), num_warps=4,
    )
    return dk, dv, dbeta, dg
