"""Causal multi-head self-attention with RoPE: full (`attn`) and sliding-window (`swa`). No biases.

A query at position i sees keys j with j <= i, i - j < window (flash-attn's (window-1, 0): i-W+1 .. i) and
j in the same packed document. Plain SDPA with is_causal is used whenever no extra mask is needed.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gdn.models.documents import check_packed, document_ids, positions_in_documents
from gdn.models.rotary import RotaryEmbedding


@dataclass
class KVCache:
    """Decode state: rotated keys and values [B, H, L, D] of the last L tokens, and how many tokens came so far."""

    key: torch.Tensor | None = None
    value: torch.Tensor | None = None
    seen: int = 0


class Attention(nn.Module):
    """Full causal attention. forward(x [B, T, D], cu_seqlens=None, state=None) -> (y, new KVCache or None)."""

    window: int | None = None

    def __init__(self, d_model: int, num_heads: int, head_dim: int | None = None, rope_base: float = 10000.0):
        super().__init__()
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

    def forward(
        self, x: torch.Tensor, cu_seqlens: torch.Tensor | None = None, state: KVCache | None = None
    ) -> tuple[torch.Tensor, KVCache | None]:
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
        q, k, v = (proj(x).unflatten(-1, heads) for proj in (self.q_proj, self.k_proj, self.v_proj))
        q, k = self.rotary(q, positions), self.rotary(k, positions)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, H, T, D]

        new_state = None
        if state is not None:
            if state.key is not None:
                k, v = torch.cat([state.key, k], dim=2), torch.cat([state.value, v], dim=2)
            new_state = KVCache(self._keep(k), self._keep(v), seen + T)
        mask = self._mask(T, k.shape[2], seen, cu_seqlens, cached=state is not None, device=x.device)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
        return self.o_proj(y.transpose(1, 2).flatten(-2)), new_state

    def _keep(self, t: torch.Tensor) -> torch.Tensor:
        """What the next call can still attend to: everything, or the last window-1 tokens."""
        if self.window is None:
            return t
        return t[:, :, max(0, t.shape[2] - (self.window - 1)) :]

    def _mask(self, num_queries, num_keys, seen, cu_seqlens, cached, device) -> torch.Tensor | None:
        """Boolean [T, L] (True = attend), or None where SDPA's own causal mask is exact."""
        if not cached and cu_seqlens is None and (self.window is None or self.window >= num_queries):
            return None
        query_pos = torch.arange(seen, seen + num_queries, device=device)[:, None]  # positions in the stream
        key_pos = torch.arange(seen + num_queries - num_keys, seen + num_queries, device=device)[None, :]
        allowed = key_pos <= query_pos
        if self.window is not None:
            allowed = allowed & (key_pos > query_pos - self.window)
        if cu_seqlens is not None:
            documents = document_ids(cu_seqlens, num_queries)
            allowed = allowed & (documents[:, None] == documents[None, :])
        return allowed


class SlidingWindowAttention(Attention):
    """Causal attention restricted to the last `window` tokens (the query's own included)."""

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        head_dim: int | None = None,
        rope_base: float = 10000.0,
        window: int = 2048,
    ):
        super().__init__(d_model, num_heads, head_dim, rope_base)
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = window
