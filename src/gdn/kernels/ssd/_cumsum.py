"""gc = the cumulative sum of the log decay g inside each 64-token chunk (restarting at every chunk and sequence),
one Triton pass each way on the flat token axis [tokens, H]:
    forward    gc_t = sum_{s <= t, s in t's chunk} g_s
    backward   dg_s = sum_{t >= s, t in s's chunk} dgc_t      (the reverse cumulative sum)
fp32 throughout; a chunk holds at most 64 terms, so no precision is lost to long sequences.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from gdn.kernels.gated_delta._common import CHUNK, ChunkLayout, chunk_rows, new_buffer

HEADS_PER_PROGRAM = 16


@triton.jit
def _chunk_cumsum_kernel(x_ptr, y_ptr, cu_seqlens_ptr, chunk_index_ptr, H,
                         BT: tl.constexpr, BH: tl.constexpr, REVERSE: tl.constexpr):
    i_c, i_h = tl.program_id(0), tl.program_id(1)
    rows, valid = chunk_rows(cu_seqlens_ptr, chunk_index_ptr, i_c, BT)
    heads = i_h * BH + tl.arange(0, BH)
    mask = valid[:, None] & (heads < H)[None, :]
    offs = rows.to(tl.int64)[:, None] * H + heads[None, :]
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(y_ptr + offs, tl.cumsum(x, 0, reverse=REVERSE), mask=mask)


def chunk_local_cumsum(x: torch.Tensor, layout: ChunkLayout, reverse: bool = False) -> torch.Tensor:
    """x [tokens, H] on `layout`'s flat token axis -> its cumulative sum inside each chunk (fp32); reverse=True
    sums from the chunk's end, which is the forward's backward."""
    total, H = x.shape
    y = new_buffer((total, H), torch.float32, x.device)
    block_h = min(HEADS_PER_PROGRAM, triton.next_power_of_2(H))
    _chunk_cumsum_kernel[(layout.num_chunks, triton.cdiv(H, block_h))](
        x.contiguous(), y, layout.cu_seqlens, layout.chunk_index, H, BT=CHUNK, BH=block_h, REVERSE=reverse,
    )
    return y
