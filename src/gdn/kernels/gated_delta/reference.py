"""Step-by-step gated delta rule in plain PyTorch: the test oracle for every gated-delta implementation.

Per head, with state S of shape [K, V] (gated-deltanet-facts.md, "The recurrence"):
    S_t = exp(g_t) * (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T
    o_t = S_t^T (scale * q_t)
Written as the delta-rule update S_t = a S + k (beta (v - (a S)^T k))^T with a = exp(g_t), which is the same
thing and avoids forming the K x K matrix. Runs in the dtype it is given: pass float64 inputs for an oracle.
Differentiable through plain autograd (slow: one Python step per token; use small shapes).
"""
from __future__ import annotations

import torch

from gdn.kernels.sequences import sequence_bounds


def l2_normalize(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """x / sqrt(sum(x^2) + eps) over the last dim (the GDN q/k normalisation)."""
    return x * torch.rsqrt((x * x).sum(-1, keepdim=True) + eps)


def recurrent_gated_delta_rule_reference(
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
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Same arguments and layout as `gdn.kernels.chunk_gated_delta_rule`; computes in the inputs' dtype."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    scale = K**-0.5 if scale is None else scale
    if use_qk_l2norm:
        q, k = l2_normalize(q), l2_normalize(k)
    outputs = [[q.new_zeros(H, V)] * T for _ in range(B)]
    finals = []
    for n, (b, start, end) in enumerate(sequence_bounds(cu_seqlens, B, T)):
        if initial_state is not None:
            S = initial_state[n].to(q.dtype)
        else:
            S = q.new_zeros(H, K, V)
        for t in range(start, end):
            S = torch.exp(g[b, t].to(q.dtype))[:, None, None] * S
            k_t, q_t = k[b, t], q[b, t]  # [H, K]
            predicted = torch.einsum("hkv,hk->hv", S, k_t)
            delta = beta[b, t].to(q.dtype)[:, None] * (v[b, t] - predicted)  # [H, V]
            S = S + k_t[:, :, None] * delta[:, None, :]
            outputs[b][t] = torch.einsum("hkv,hk->hv", S, q_t * scale)
        finals.append(S)
    o = torch.stack([torch.stack(row) if T else q.new_zeros(0, H, V) for row in outputs])
    final = torch.stack(finals) if output_final_state else None
    return o, final

