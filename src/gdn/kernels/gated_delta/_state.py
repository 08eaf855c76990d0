"""Inter-chunk state pass of chunked linear recurrences with a scalar per-token decay.

One program per (sequence, head, V tile) walks the chunks in order, keeping the state S [K, BV] in fp32
registers. Per chunk, with gc the chunk-local cumulative log decay and gl its last value:
    V_new = U - W S                                   (delta rule; without W: V_new = U)
    S    <- exp(gl) S + (exp(gl - gc) o K)^T V_new
Gated DeltaNet passes its WY matrices (W, U); Mamba2's SSD passes no W and U = dt x, so both operators share
these kernels. The backward pass walks the chunks in reverse with dS (gradient of the state at the chunk's
end):
    dV_new = dV_intra + (exp(gl - gc) o K) dS
    dS    <- exp(gl) dS + scale (exp(gc) o Q)^T dO - W^T dV_new

Precision: S and dS stay fp32 across chunks. The per-chunk copies stored for the chunk-parallel kernels (h, dh,
V_new, dV_new) and the operands of the tensor-core products use the input dtype: one rounding per product
operand, summed in fp32; the carried state is never re-read from a rounded copy, so the rounding does not
compound from chunk to chunk beyond the (decayed) bf16 products themselves.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from gdn.kernels.gated_delta._common import (
    CHUNK, ChunkLayout, autotune, dot_precision, new_buffer, qk_head, tile_width,
)

# V tiles of at least 64 (tile_width in _common says why narrower ones are avoided)
_CONFIGS = [triton.Config({"BV": 64}, num_warps=w, num_stages=2) for w in (4, 8)]


@autotune(_CONFIGS, key=["K", "V", "HAS_W"])
@triton.jit
def state_forward_kernel(
    k_ptr, w_ptr, u_ptr, gc_ptr, h0_ptr,  # [T, QK_H, K], [T, H, K] (HAS_W), [T, H, V], [T, H] fp32, [N, H, K, V] fp32
    h_ptr, v_new_ptr, ht_ptr,  # out: [NC, H, K, V] state at each chunk start, [T, H, V] (HAS_W), [N, H, K, V] fp32
    cu_seqlens_ptr, chunk_offsets_ptr,
    H: tl.constexpr, QK_H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
    BV: tl.constexpr, HAS_W: tl.constexpr, HAS_H0: tl.constexpr, STORE_FINAL: tl.constexpr, PRECISION: tl.constexpr,
):
    i_v, i_n, i_h = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    start, end = tl.load(cu_seqlens_ptr + i_n), tl.load(cu_seqlens_ptr + i_n + 1)
    first_chunk = tl.load(chunk_offsets_ptr + i_n)
    ck, cv, rt = tl.arange(0, BK), i_v * BV + tl.arange(0, BV), tl.arange(0, BT)
    state_offs = (i_h * K + ck[:, None]) * V + cv[None, :]
    state_mask = (ck[:, None] < K) & (cv[None, :] < V)
    dtype = k_ptr.dtype.element_ty

    s = tl.zeros((BK, BV), dtype=tl.float32)
    if HAS_H0:
        s += tl.load(h0_ptr + i_n * H * K * V + state_offs, mask=state_mask, other=0.0)
    for c in range(0, tl.cdiv(end - start, BT)):
        tl.store(h_ptr + (first_chunk + c) * H * K * V + state_offs, s.to(h_ptr.dtype.element_ty), mask=state_mask)
        rows = start + c * BT + rt
        valid = rows < end
        k_offs = (rows[:, None] * QK_H + qk_head(i_h, H, QK_H)) * K + ck[None, :]
        w_offs = (rows[:, None] * H + i_h) * K + ck[None, :]
        k_mask = valid[:, None] & (ck < K)
        v_offs = (rows[:, None] * H + i_h) * V + cv[None, :]
        v_mask = valid[:, None] & (cv < V)
        gc = tl.load(gc_ptr + rows * H + i_h, mask=valid, other=0.0)
        gl = tl.load(gc_ptr + tl.minimum(start + c * BT + BT, end) * H - H + i_h)
        v_new = tl.load(u_ptr + v_offs, mask=v_mask, other=0.0).to(tl.float32)
        if HAS_W:
            w = tl.load(w_ptr + w_offs, mask=k_mask, other=0.0)
            v_new -= tl.dot(w, s.to(dtype), input_precision=PRECISION)
            tl.store(v_new_ptr + v_offs, v_new.to(v_new_ptr.dtype.element_ty), mask=v_mask)
        k = tl.load(k_ptr + k_offs, mask=k_mask, other=0.0)
        k_decayed = (k * tl.where(valid, tl.exp(gl - gc), 0.0)[:, None]).to(dtype)
        s = s * tl.exp(gl) + tl.dot(tl.trans(k_decayed), v_new.to(dtype), input_precision=PRECISION)
    if STORE_FINAL:
        tl.store(ht_ptr + i_n * H * K * V + state_offs, s, mask=state_mask)


@autotune(_CONFIGS, key=["K", "V", "HAS_W"])
@triton.jit
def state_backward_kernel(
    q_ptr, k_ptr, w_ptr, gc_ptr, do_ptr, dv_intra_ptr, dht_ptr,  # dht: [N, H, K, V] fp32 (HAS_DHT)
    dh_ptr, dv_new_ptr, dh0_ptr,  # out: [NC, H, K, V] dS at each chunk end, [T, H, V], [N, H, K, V] fp32
    cu_seqlens_ptr, chunk_offsets_ptr, scale,
    H: tl.constexpr, QK_H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr,
    BV: tl.constexpr, HAS_W: tl.constexpr, HAS_DHT: tl.constexpr, STORE_DH0: tl.constexpr, PRECISION: tl.constexpr,
):
    i_v, i_n, i_h = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    start, end = tl.load(cu_seqlens_ptr + i_n), tl.load(cu_seqlens_ptr + i_n + 1)
    first_chunk = tl.load(chunk_offsets_ptr + i_n)
    ck, cv, rt = tl.arange(0, BK), i_v * BV + tl.arange(0, BV), tl.arange(0, BT)
    state_offs = (i_h * K + ck[:, None]) * V + cv[None, :]
    state_mask = (ck[:, None] < K) & (cv[None, :] < V)
    dtype = k_ptr.dtype.element_ty

    ds = tl.zeros((BK, BV), dtype=tl.float32)
    if HAS_DHT:
        ds += tl.load(dht_ptr + i_n * H * K * V + state_offs, mask=state_mask, other=0.0)
    n_chunks = tl.cdiv(end - start, BT)
    for c_rev in range(0, n_chunks):
        c = n_chunks - 1 - c_rev
        tl.store(dh_ptr + (first_chunk + c) * H * K * V + state_offs, ds.to(dh_ptr.dtype.element_ty), mask=state_mask)
        rows = start + c * BT + rt
        valid = rows < end
        k_offs = (rows[:, None] * QK_H + qk_head(i_h, H, QK_H)) * K + ck[None, :]
        w_offs = (rows[:, None] * H + i_h) * K + ck[None, :]
        k_mask = valid[:, None] & (ck < K)
        v_offs = (rows[:, None] * H + i_h) * V + cv[None, :]
        v_mask = valid[:, None] & (cv < V)
        gc = tl.load(gc_ptr + rows * H + i_h, mask=valid, other=0.0)
        gl = tl.load(gc_ptr + tl.minimum(start + c * BT + BT, end) * H - H + i_h)
        k = tl.load(k_ptr + k_offs, mask=k_mask, other=0.0)
        k_decayed = (k * tl.where(valid, tl.exp(gl - gc), 0.0)[:, None]).to(dtype)
        dv_new = tl.load(dv_intra_ptr + v_offs, mask=v_mask, other=0.0).to(tl.float32)
        dv_new += tl.dot(k_decayed, ds.to(dtype), input_precision=PRECISION)
        tl.store(dv_new_ptr + v_offs, dv_new.to(dv_new_ptr.dtype.element_ty), mask=v_mask)
        q = tl.load(q_ptr + k_offs, mask=k_mask, other=0.0)
        q_decayed = (q * (scale * tl.exp(gc))[:, None]).to(dtype)
        do = tl.load(do_ptr + v_offs, mask=v_mask, other=0.0)
        ds = ds * tl.exp(gl) + tl.dot(tl.trans(q_decayed), do.to(dtype), input_precision=PRECISION)
        if HAS_W:
            w = tl.load(w_ptr + w_offs, mask=k_mask, other=0.0)
            ds -= tl.dot(tl.trans(w), dv_new.to(dtype), input_precision=PRECISION)
    if STORE_DH0:
        tl.store(dh0_ptr + i_n * H * K * V + state_offs, ds, mask=state_mask)


def _grid(V: int, layout: ChunkLayout, H: int):
    return lambda meta: (triton.cdiv(V, meta["BV"]), layout.num_seqs, H)


def state_forward(k, w, u, gc, initial_state, output_final_state: bool, layout: ChunkLayout,
                  h_rows: int | None = None):
    """-> h [NC, H, K, V] (input dtype), v_new [T, H, V] (None without w), final state [N, H, K, V] fp32 | None.
    k [T, QK_H, K] may hold fewer heads than u [T, H, V]: QK_H groups, each read by H / QK_H consecutive heads.
    h_rows > NC pads h with zero rows (a shape that does not depend on cu_seqlens' values, for torch.compile)."""
    total, QK_H, K = k.shape
    H, V = u.shape[1:]
    h = new_buffer((h_rows or layout.num_chunks, H, K, V), k.dtype, k.device)
    h[layout.num_chunks:].zero_()
    v_new = new_buffer(u.shape, u.dtype, k.device) if w is not None else None
    final = new_buffer((layout.num_seqs, H, K, V), torch.float32, k.device) if output_final_state else None
    state_forward_kernel[_grid(V, layout, H)](
        k, w, u, gc, initial_state, h, v_new, final, layout.cu_seqlens, layout.chunk_offsets,
        H=H, QK_H=QK_H, K=K, V=V, BT=CHUNK, BK=tile_width(K, 256), HAS_W=w is not None,
        HAS_H0=initial_state is not None, STORE_FINAL=output_final_state, PRECISION=dot_precision(k.dtype),
    )
    return h, v_new, final


def state_backward(q, k, w, gc, do, dv_intra, d_final_state, scale: float, need_dh0: bool, layout: ChunkLayout):
    """-> dh [NC, H, K, V] (gradient of each chunk's end state), dv_new [T, H, V], dh0 [N, H, K, V] fp32 | None."""
    total, QK_H, K = k.shape
    H, V = do.shape[1:]
    dh = new_buffer((layout.num_chunks, H, K, V), k.dtype, k.device)
    dv_new = new_buffer(do.shape, k.dtype, k.device)
    dh0 = new_buffer((layout.num_seqs, H, K, V), torch.float32, k.device) if need_dh0 else None
    state_backward_kernel[_grid(V, layout, H)](
        q, k, w, gc, do, dv_intra, d_final_state, dh, dv_new, dh0, layout.cu_seqlens, layout.chunk_offsets, scale,
        H=H, QK_H=QK_H, K=K, V=V, BT=CHUNK, BK=tile_width(K, 256), HAS_W=w is not None,
        HAS_DHT=d_final_state is not None, STORE_DH0=need_dh0, PRECISION=dot_precision(k.dtype),
    )
    return dh, dv_new, dh0
