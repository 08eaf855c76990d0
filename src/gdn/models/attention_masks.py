"""Which keys a query may attend to, written once and used two ways: as a dense boolean mask (SDPA: the CPU path
and decoding) and as a FlexAttention block mask (the GPU path).

A query at stream position q sees the key at position kv iff
    kv <= q                      causal
    q - kv < window              sliding window, flash-attn's (window-1, 0): q itself and the window-1 before it
    doc[q] == doc[kv]            packed documents (cu_seqlens): nothing crosses a document boundary
FlexAttention skips every 128 x 128 block that the mask empties, so a window W costs about T W instead of T^2 / 2.

Block masks are cached (BlockMaskCache): one per (length, window, device), shared by every attention layer of a
forward pass and by every step with the same shapes; for packed batches one per cu_seqlens tensor too (a TensorMemo:
the same object, not modified in place since), which the trainer makes once per batch and hands to every layer.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from functools import partial

import torch
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention

from gdn.kernels.tensor_memo import TensorMemo
from gdn.models.documents import document_ids

MaskMod = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def visible_mask_mod(window: int | None = None, documents: torch.Tensor | None = None) -> MaskMod:
    """FlexAttention's mask_mod(batch, head, q_idx, kv_idx) -> True where the query may see the key.
    `documents` [T]: the document index of each position (packed batches), or None."""

    def mask_mod(batch, head, q_idx, kv_idx):
        allowed = kv_idx <= q_idx
        if window is not None:
            allowed = allowed & (q_idx - kv_idx < window)
        if documents is not None:
            allowed = allowed & (documents[q_idx] == documents[kv_idx])
        return allowed

    return mask_mod


def dense_mask(query_positions: torch.Tensor, key_positions: torch.Tensor, window: int | None = None,
               documents: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean [Q, K] (True = attend) for queries and keys at the given stream positions, from the same mask_mod;
    `documents` as in visible_mask_mod (indexed by those positions)."""
    return visible_mask_mod(window, documents)(None, None, query_positions[:, None], key_positions[None, :])


class BlockMaskCache:
    """The last `size` FlexAttention block masks of whole rows by (length, window, device), and the last `size` of
    packed batches by the same and their cu_seqlens tensor."""

    def __init__(self, size: int = 8):
        self.size = size
        self.entries: OrderedDict[tuple, BlockMask] = OrderedDict()
        self.packed = TensorMemo(size)

    # Kept out of torch.compile'd blocks (one graph break): the lookup is host-side Python on tensor identities.
    @torch.compiler.disable
    def get(self, length: int, window: int | None, device: torch.device,
            cu_seqlens: torch.Tensor | None = None) -> BlockMask:
        key = (length, window, str(device))
        if cu_seqlens is not None:
            return self.packed.get(cu_seqlens, key, partial(build_block_mask, length, window, device, cu_seqlens))
        if key not in self.entries:
            self.entries[key] = build_block_mask(length, window, device)
            if len(self.entries) > self.size:
                self.entries.popitem(last=False)
        self.entries.move_to_end(key)
        return self.entries[key]


def build_block_mask(length: int, window: int | None, device: torch.device,
                     cu_seqlens: torch.Tensor | None = None) -> BlockMask:
    documents = None if cu_seqlens is None else document_ids(cu_seqlens, length)
    return create_block_mask(visible_mask_mod(window, documents), B=None, H=None, Q_LEN=length, KV_LEN=length,
                             device=device, _compile=torch.device(device).type == "cuda")


BLOCK_MASKS = BlockMaskCache()
_compiled_flex_attention = None


def masked_flex_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int | None,
                          cu_seqlens: torch.Tensor | None = None, block_mask: BlockMask | None = None) -> torch.Tensor:
    """q, k, v [B, H, T, D] -> [B, H, T, D]: attention under the visible mask, through torch.compile'd
    FlexAttention (compiled on first use; the uncompiled form materialises every score). GPU only for training:
    FlexAttention's backward raises NotImplementedError on the CPU (torch 2.13).

    `block_mask`: BLOCK_MASKS.get(T, window, device, cu_seqlens), looked up by the caller outside compiled code
    (Attention.host_inputs); None looks it up here, which inside a torch.compile'd region is a graph break."""
    if block_mask is None:
        block_mask = BLOCK_MASKS.get(q.shape[2], window, q.device, cu_seqlens)
    if torch.compiler.is_compiling():  # traced into the caller's graph
        return flex_attention(q, k, v, block_mask=block_mask)
    global _compiled_flex_attention
    if _compiled_flex_attention is None:
        # default dynamic: a second sequence length recompiles once with a symbolic length, later ones reuse it
        _compiled_flex_attention = torch.compile(flex_attention)
    return _compiled_flex_attention(q, k, v, block_mask=block_mask)
