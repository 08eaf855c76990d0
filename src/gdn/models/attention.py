"""Causal multi-head self-attention with RoPE: full (`attn`) and sliding-window (`swa`). No biases.

A query at position i sees keys j with j <= i, i - j < window (flash-attn's (window-1, 0): i-W+1 .. i) and
j in the same packed document (gdn.models.attention_masks). Plain SDPA with is_causal runs whenever no extra
mask is needed (flash / cuDNN on the GPU). Where a mask is needed (a window shorter than the sequence, packed
documents), backend "auto" runs FlexAttention with a cached block mask on CUDA and SDPA with a dense boolean
mask elsewhere (and when decoding); "sdpa" always takes the dense mask, "flex" always FlexAttention (on the CPU
forward only: its backward is not implemented there).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention.flex_attention import BlockMask

from gdn.models.attention_masks import BLOCK_MASKS, dense_mask, masked_flex_attention
from gdn.models.documents import check_packed, document_ids, positions_in_documents
from gdn.models.fused_linear import fused_linear
from gdn.models.rotary import RotaryEmbedding


BACKENDS = ("auto", "flex", "sdpa")


@dataclass
class KVCache:
    """Decode state: rotated keys and values [B, H, L, D] of the last L tokens, and how many tokens came so far."""

    key: torch.Tensor | None = None
    value: torch.Tensor | None = None
    seen: int = 0


class Attention(nn.Module):
    """Full causal attention. forward(x [B, T, D], cu_seqlens=None, state=None) -> (y, new KVCache or None)."""

    window: int | None = None

    def __init__(self, d_model: int, num_heads: int, head_dim: int | None = None, rope_base: float = 10000.0,
                 backend: str = "auto"):
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.backend = backend
        self.num_heads = num_heads
        self.head_dim = head_dim or d_model // num_heads
        inner = num_heads * self.head_dim
        self.q_proj = nn.Linear(d_model, inner, bias=False)
        self.k_proj = nn.Linear(d_model, inner, bias=False)
        self.v_proj = nn.Linear(d_model, inner, bias=False)
        self.o_proj = nn.Linear(inner, d_model, bias=False)
        self.rotary = RotaryEmbedding(self.head_dim, rope_base)

    def init_state(self) -> KVCache:
        """An empty KV cache, to pass as `state` on the first call."""
        return KVCache()

    def host_inputs(self, length: int, device: torch.device, cu_seqlens: torch.Tensor | None = None) -> dict:
        """Keyword arguments for a training forward over `length` tokens that host-side Python builds: the cached
        FlexAttention block mask, where this layer needs one. LanguageModel.forward looks them up outside the
        torch.compile'd blocks (the cache is keyed by tensor identity, which Dynamo cannot trace: a lookup inside
        a compiled block splits it into five graphs, and the attention between them runs op by op)."""
        if self._needs_mask(length, cu_seqlens, None) and self._uses_flex(device):
            return {"block_mask": BLOCK_MASKS.get(length, self.window, device, cu_seqlens)}
        return {}

    def forward(
        self, x: torch.Tensor, cu_seqlens: torch.Tensor | None = None, state: KVCache | None = None,
        block_mask: BlockMask | None = None,
    ) -> tuple[torch.Tensor, KVCache | None]:
        """block_mask: host_inputs' for this call, or None (then looked up here when needed)."""
        check_packed(x, cu_seqlens)
        if state is not None and cu_seqlens is not None:
            raise ValueError("decode state and cu_seqlens cannot be combined: decode with one row per sequence")
        T = x.shape[1]
        seen = state.seen if state is not None else 0
        if cu_seqlens is not None:
            positions = positions_in_documents(cu_seqlens, T)
        else:
            positions = torch.arange(seen, seen + T, device=x.device)
        heads = (self.num_heads, self.head_dim)
        qkv = fused_linear(x, (self.q_proj, self.k_proj, self.v_proj))  # one GEMM
        q, k, v = (t.unflatten(-1, heads) for t in qkv.chunk(3, dim=-1))
        q, k = self.rotary(q, positions), self.rotary(k, positions)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, H, T, D]

        new_state = None
        if state is not None:
            if state.key is not None:
                k, v = torch.cat([state.key, k], dim=2), torch.cat([state.value, v], dim=2)
            new_state = KVCache(self._keep(k), self._keep(v), seen + T)
        needs_mask = self._needs_mask(T, cu_seqlens, state)
        if needs_mask and state is None and self._uses_flex(x.device):
            y = masked_flex_attention(q, k, v, self.window, cu_seqlens, block_mask)
        else:
            mask = self._mask(T, k.shape[2], seen, cu_seqlens, device=x.device) if needs_mask else None
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
        return self.o_proj(y.transpose(1, 2).flatten(-2)), new_state

    def _keep(self, t: torch.Tensor) -> torch.Tensor:
        """What the next call can still attend to: everything, or the last window-1 tokens."""
        if self.window is None:
            return t
        return t[:, :, max(0, t.shape[2] - (self.window - 1)) :]

    def _needs_mask(self, length: int, cu_seqlens: torch.Tensor | None, state: KVCache | None) -> bool:
        """Anything beyond plain causal: decoding, packed documents, or a window shorter than the sequence."""
        return state is not None or cu_seqlens is not None or (self.window is not None and self.window < length)

    def _uses_flex(self, device: torch.device) -> bool:
        return self.backend == "flex" or (self.backend == "auto" and device.type == "cuda")

    def _mask(self, num_queries, num_keys, seen, cu_seqlens, device) -> torch.Tensor:
        """Boolean [T, L] (True = attend): queries at stream positions seen .. seen+T-1, keys the last L of them."""
        query_pos = torch.arange(seen, seen + num_queries, device=device)
        key_pos = torch.arange(seen + num_queries - num_keys, seen + num_queries, device=device)
        documents = None if cu_seqlens is None else document_ids(cu_seqlens, num_queries)
        return dense_mask(query_pos, key_pos, self.window, documents)


class SlidingWindowAttention(Attention):
    """Causal attention restricted to the last `window` tokens (the query's own included)."""

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        head_dim: int | None = None,
        rope_base: float = 10000.0,
        window: int = 2048,
        backend: str = "auto",
    ):
        super().__init__(d_model, num_heads, head_dim, rope_base, backend)
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = window
