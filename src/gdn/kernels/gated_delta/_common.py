"""Shared plumbing of the chunked Triton kernels: sequence/chunk layout, buffers, autotuning, shape limits.

Every kernel sees the input as one flat token axis [total_tokens, heads, dim]: a dense batch [B, T] is B
sequences of length T back to back, so dense and varlen inputs share one code path (cu_seqlens).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from gdn.kernels.tensor_memo import TensorMemo

CHUNK = 64  # tokens per chunk: the UT transform inverts a CHUNK x CHUNK unit-lower-triangular matrix
MAX_K = 256
MAX_V = 512

# Tests set this to True so that every buffer starts as NaN and an element a kernel forgot to write fails.
poison_outputs = False


def new_buffer(shape, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if poison_outputs:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


EMPTY = (0,)  # the shape of an absent tensor in a custom op's signature (an op can neither take nor return None)


def absent(like: torch.Tensor) -> torch.Tensor:
    """An absent fp32 output of a custom op, on like's device: a new tensor each call (op outputs may not alias)."""
    return like.new_empty(EMPTY, dtype=torch.float32)


def interpreting() -> bool:
    return triton.knobs.runtime.interpret


def _make_interpreter_match_the_gpu() -> None:
    """Three faults of Triton's CPU interpreter (3.9), patched so CPU tests measure what the GPU computes:
    dot multiplies bf16 operands as their raw uint16 bits (upcast them to fp32 first: exact, and what bf16
    products with fp32 accumulation give); a "tf32" dot of fp32 operands is computed in full fp32 (the GPU's
    tensor cores round each operand to tf32's 10-bit mantissa first: round them so here too); and fp32 -> bf16
    casts truncate (the GPU rounds to nearest even)."""
    import numpy as np
    from triton.runtime.interpreter import InterpreterBuilder, TensorHandle

    create_dot, cast_impl = InterpreterBuilder.create_dot, InterpreterBuilder.cast_impl

    def to_tf32(x):
        bits = np.ascontiguousarray(x.data, dtype=np.float32).view(np.uint32)
        rounded = ((bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000)).view(np.float32)  # nearest, ties away
        return TensorHandle(rounded, tl.float32)

    def upcasting_create_dot(self, a, b, d, input_precision, *args):
        a, b = (cast_impl(self, x, tl.float32) if x.dtype.scalar == tl.bfloat16 else x for x in (a, b))
        if input_precision.name == "TF32":
            a, b = (to_tf32(x) if x.dtype.scalar == tl.float32 else x for x in (a, b))
        return create_dot(self, a, b, d, input_precision, *args)

    def rounding_cast_impl(self, src, dst_type):
        if src.dtype.scalar == tl.float32 and dst_type.scalar == tl.bfloat16:
            rounded = torch.from_numpy(np.ascontiguousarray(src.data)).to(torch.bfloat16).view(torch.int16)
            return TensorHandle(rounded.numpy().view(np.uint16), tl.bfloat16)
        return cast_impl(self, src, dst_type)

    InterpreterBuilder.create_dot = upcasting_create_dot
    InterpreterBuilder.cast_impl = rounding_cast_impl


if interpreting():
    _make_interpreter_match_the_gpu()


def autotune(configs: list[triton.Config], key: list[str]):
    """triton.autotune, reduced to the first config under the CPU interpreter (timing it would only be slow)."""
    return triton.autotune(configs=configs[:1] if interpreting() else configs, key=key)


def dot_precision(dtype: torch.dtype) -> str:
    """fp32 inputs get true fp32 products (the fp32 path is the accurate one); half inputs use tensor cores."""
    return "ieee" if dtype == torch.float32 else "tf32"


# Per-token log decays are floored here before the chunked kernels see them. Their chunk-local cumulative sums gc
# are fp32, and a hard reset (g = -1e4) would put every later gc of its chunk near -1e4, where fp32's spacing is
# 1e-3: the weak decays after it, exp(gc_i - gc_j), would lose about that much. exp(-20) = 2e-9 is already a reset
# (the state's share of the next token is below fp32's resolution), and a chunk's gc then stays above -1280. The
# gradient of a floored g is 0, where the exact one is exp(g) times a bounded factor: below 2e-9 of it.
LOG_DECAY_FLOOR = -20.0


def floor_fp32_log_decays(g: torch.Tensor) -> torch.Tensor:
    """The PyTorch paths' floor: fp32 log decays clamped at LOG_DECAY_FLOOR, as the Triton kernels do; float64 (the
    oracles) keeps every decay exact."""
    return g.clamp_min(LOG_DECAY_FLOOR) if g.dtype == torch.float32 else g


def pow2_at_least_16(n: int) -> int:
    return max(16, triton.next_power_of_2(n))


MIN_TILE = 64


def tile_width(n: int, cap: int) -> int:
    """Width of a K or V tile of the chunk kernels: a power of two >= n, at least MIN_TILE, at most cap.

    Smaller heads are padded by the masks. On an H100 with Triton 3.6, tiles narrower than 64 beside the 64-token
    chunk axis miscompiled while the CPU interpreter was right: NaN gradients from the WY backward at K = V = 32 and
    an illegal memory access in the output forward at K = 64, V = 32. The small-head GPU cases of
    tests/kernels/test_gated_delta_triton.py check this rule on the card."""
    return min(cap, max(MIN_TILE, triton.next_power_of_2(n)))


@dataclass(frozen=True)
class ChunkLayout:
    """Where every sequence and every chunk lies on the flat token axis.

    cu_seqlens:    int32 [N + 1], sequence n spans tokens [cu_seqlens[n], cu_seqlens[n + 1]).
    chunk_index:   int32 [num_chunks, 2], (sequence, chunk within the sequence) of every chunk, in order.
    chunk_offsets: int32 [N + 1], index of each sequence's first chunk (per-chunk buffers are [num_chunks, ...]).
    """

    cu_seqlens: torch.Tensor
    chunk_index: torch.Tensor
    chunk_offsets: torch.Tensor
    num_seqs: int
    num_chunks: int


def chunk_layout(batch: int, length: int, cu_seqlens: torch.Tensor | None, device: torch.device) -> ChunkLayout:
    """The layout of B dense sequences of `length` tokens, or of the sequences of cu_seqlens (values checked).

    With cu_seqlens, the layout needs one host sync (the chunk count sizes the grids). Every layer of a model's
    forward and backward gets the same cu_seqlens tensor, so the layout built for the first serves all the others
    while that tensor lives unchanged: one sync a step instead of three per GDN layer and two per SSD layer, each of
    which let the GPU drain its queue while the host waited."""
    if cu_seqlens is None:
        per_seq = triton.cdiv(length, CHUNK)
        seqs = torch.arange(batch + 1, dtype=torch.int32, device=device)
        within = torch.arange(per_seq, dtype=torch.int32, device=device)
        index = torch.stack([seqs[:-1].repeat_interleave(per_seq), within.repeat(batch)], 1).contiguous()
        return ChunkLayout(seqs * length, index, seqs * per_seq, batch, batch * per_seq)
    total = batch * length
    return _varlen_layouts.get(cu_seqlens, (total, device),
                               lambda: _varlen_layout(checked_bounds(cu_seqlens, total), cu_seqlens, device))


def checked_bounds(cu_seqlens: torch.Tensor, total: int) -> list[int]:
    """cu_seqlens on the host (a sync), checked to rise from 0 to the token count `total`."""
    if cu_seqlens.is_floating_point() or cu_seqlens.is_complex():
        raise ValueError(f"cu_seqlens must be an integer tensor (int32 or int64); got {cu_seqlens.dtype}")
    bounds = cu_seqlens.tolist()
    if len(bounds) < 2 or bounds[0] != 0 or bounds[-1] != total or any(b > a for a, b in zip(bounds[1:], bounds)):
        raise ValueError(f"cu_seqlens must rise from 0 to T = {total}; got {bounds}")
    return bounds


def _varlen_layout(bounds: list[int], cu_seqlens: torch.Tensor, device: torch.device) -> ChunkLayout:
    num_chunks = sum((end - start + CHUNK - 1) // CHUNK for start, end in zip(bounds, bounds[1:]))
    cu = cu_seqlens.to(device=device, dtype=torch.int32)
    num_seqs = cu.numel() - 1
    per_seq = (cu[1:] - cu[:-1] + CHUNK - 1) // CHUNK
    offsets = torch.cat([cu.new_zeros(1), per_seq.cumsum(0)]).int()
    seqs = torch.repeat_interleave(torch.arange(num_seqs, device=device), per_seq, output_size=num_chunks)
    within = torch.arange(num_chunks, device=device) - offsets[seqs]  # chunk c of sequence n: c - its first chunk
    index = torch.stack([seqs, within], 1).int().contiguous()
    return ChunkLayout(cu, index, offsets, num_seqs, num_chunks)


# One entry: every layer of a step shares the batch's cu_seqlens tensor (micro-batches come one after the other).
_varlen_layouts = TensorMemo(size=1)


@triton.jit
def qk_head(i_h, H: tl.constexpr, QK_H: tl.constexpr):
    """The q/k head that value head i_h reads: i_h itself (QK_H = H, the gated delta rule), else its group's
    (QK_H groups of H / QK_H heads each: the SSD's B and C, shared by the heads of a group)."""
    if QK_H == H:
        return i_h
    else:
        return i_h // (H // QK_H)


@triton.jit
def decay_matrix(gc, valid, STRICT: tl.constexpr, BT: tl.constexpr):
    """M_ij = exp(gc_i - gc_j) for j <= i (j < i if STRICT) with row i inside the sequence, else 0.

    gc is a cumulative sum of log decays <= 0, so gc_i - gc_j <= 0 wherever M is kept: exp never sees a positive
    argument. Rows past the sequence's end load gc = 0, where gc_i - gc_j = -gc_j > 0 would overflow under strong
    decay (then inf * 0 = NaN in every product that touches the row): their exponents are masked before the exp,
    not after. Valid rows are a prefix of the chunk, so a valid row i has valid columns j <= i."""
    rt = tl.arange(0, BT)
    if STRICT:
        kept = (rt[:, None] > rt[None, :]) & valid[:, None]
    else:
        kept = (rt[:, None] >= rt[None, :]) & valid[:, None]
    return tl.where(kept, tl.exp(tl.where(kept, gc[:, None] - gc[None, :], 0.0)), 0.0)


@triton.jit
def chunk_rows(cu_seqlens_ptr, chunk_index_ptr, i_c, BT: tl.constexpr):
    """Token rows of chunk i_c on the flat token axis, and which of them lie inside its sequence."""
    i_n = tl.load(chunk_index_ptr + 2 * i_c)
    start = tl.load(cu_seqlens_ptr + i_n) + tl.load(chunk_index_ptr + 2 * i_c + 1) * BT
    end = tl.load(cu_seqlens_ptr + i_n + 1)
    rows = start + tl.arange(0, BT)
    return rows, rows < end


def check_inputs(q, k, v, g, beta, initial_state, cu_seqlens) -> None:
    """Raise ValueError for anything outside the kernels' limits (shapes, dtypes, K <= 256, V <= 512). The values
    of cu_seqlens are checked where the layout reads them (chunk_layout: a host sync, inside the custom ops so that
    torch.compile traces the call without a graph break)."""
    if q.dim() != 4 or k.shape != q.shape:
        raise ValueError(f"q and k must both be [B, T, H, K]; got {tuple(q.shape)} and {tuple(k.shape)}")
    B, T, H, K = q.shape
    if v.dim() != 4 or v.shape[:3] != (B, T, H):
        raise ValueError(f"v must be [B, T, H, V] with B, T, H of q {(B, T, H)}; got {tuple(v.shape)}")
    V = v.shape[-1]
    if not 1 <= K <= MAX_K:
        raise ValueError(f"head dim K = {K} is outside the supported range 1..{MAX_K}")
    if not 1 <= V <= MAX_V:
        raise ValueError(f"value dim V = {V} is outside the supported range 1..{MAX_V}")
    for name, t in (("g", g), ("beta", beta)):
        if t.shape != (B, T, H):
            raise ValueError(f"{name} must be [B, T, H] = {(B, T, H)}; got {tuple(t.shape)}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dtype not in (torch.bfloat16, torch.float16, torch.float32):
            raise ValueError(f"{name} must be bf16, fp16 or fp32; got {t.dtype}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share one dtype; got {q.dtype}, {k.dtype}, {v.dtype}")
    if cu_seqlens is not None:
        if B != 1:
            raise ValueError(f"with cu_seqlens the batch size must be 1; got {B}")
    N = B if cu_seqlens is None else cu_seqlens.numel() - 1
    if initial_state is not None and initial_state.shape != (N, H, K, V):
        raise ValueError(f"initial_state must be [N, H, K, V] = {(N, H, K, V)}; got {tuple(initial_state.shape)}")
