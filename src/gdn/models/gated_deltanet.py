"""The Gated DeltaNet sequence mixer (gated-deltanet-facts.md), with the paper's ablation switches.

    q, k = l2norm(SiLU(conv(W_q x))), l2norm(SiLU(conv(W_k x)))      per head, eps 1e-6
    v    = SiLU(conv(W_v x))
    beta = sigmoid(W_b x + b_b)                                       (0, 1), per head
    log alpha = -exp(A_log) * softplus(W_a x + dt_bias)               the Mamba2 gate, per head
    S_t  = alpha_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T,  o_t = S_t^T (q_t / sqrt(d_k))
    y    = W_o [ RMSNorm(o) * w * SiLU(W_g x) ]                       RMSNorm per head
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gdn.kernels import chunk_gated_delta_rule, chunk_gated_delta_rule_torch, gdn_gate
from gdn.models.documents import check_packed
from gdn.models.fused_linear import fused_linear
from gdn.models.gated_linear_attention import chunk_gated_linear_attention
from gdn.models.norms import GatedRMSNorm, RMSNorm
from gdn.models.short_conv import ShortConvolution

BACKENDS = ("auto", "torch", "triton")
QK_NORMS = ("l2", "none")


@dataclass
class GatedDeltaNetState:
    """Decode state: the recurrent state [B, H, d_k, d_v] and the q/k/v convolution caches [B, conv_size-1, C]."""

    recurrent: torch.Tensor | None = None
    conv: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None


class GatedDeltaNet(nn.Module):
    """forward(x [B, T, d_model], cu_seqlens=None, state=None) -> (y [B, T, d_model], new state or None).

    Ablations: use_gate=False is DeltaNet (alpha = 1); use_delta=False is gated linear attention
    S_t = alpha_t S_{t-1} + k_t v_t^T (no beta); use_short_conv=False keeps the SiLU but drops the convolution;
    use_output_gate / use_output_norm drop SiLU(W_g x) / the RMSNorm; qk_norm="none" skips the L2 normalisation.
    recompute_states (Triton path): the backward rebuilds the chunk states instead of keeping them (less memory,
    about a quarter more kernel time; the 1.3B scales turn it on so that 32K tokens a step fit on one 80 GB GPU).
    """

    # Every Triton kernel of this mixer is a torch.library custom op: torch.compile traces it whole
    # (gdn.train.parallelize.compile_block).
    triton_kernels_are_torch_ops = True

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        head_dim: int,
        expand_v: float = 2,
        conv_size: int = 4,
        use_short_conv: bool = True,
        use_gate: bool = True,
        use_delta: bool = True,
        use_output_gate: bool = True,
        use_output_norm: bool = True,
        qk_norm: str = "l2",
        backend: str = "auto",
        chunk_size: int = 64,
        norm_eps: float = 1e-5,
        recompute_states: bool = False,
    ):
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if qk_norm not in QK_NORMS:
            raise ValueError(f"qk_norm must be one of {QK_NORMS}, got {qk_norm!r}")
        if head_dim * expand_v != int(head_dim * expand_v):
            raise ValueError(f"head_dim * expand_v must be an integer, got {head_dim} * {expand_v}")
        self.num_heads, self.head_dim, self.head_v_dim = num_heads, head_dim, int(head_dim * expand_v)
        self.use_gate, self.use_delta, self.use_short_conv = use_gate, use_delta, use_short_conv
        self.use_output_gate, self.use_output_norm = use_output_gate, use_output_norm
        self.qk_norm, self.backend, self.chunk_size = qk_norm, backend, chunk_size
        self.recompute_states = recompute_states
        key_dim, value_dim = num_heads * head_dim, num_heads * self.head_v_dim

        self.q_proj = nn.Linear(d_model, key_dim, bias=False)
        self.k_proj = nn.Linear(d_model, key_dim, bias=False)
        self.v_proj = nn.Linear(d_model, value_dim, bias=False)
        if use_short_conv:
            self.q_conv = ShortConvolution(key_dim, conv_size)
            self.k_conv = ShortConvolution(key_dim, conv_size)
            self.v_conv = ShortConvolution(value_dim, conv_size)
        if use_delta:
            self.b_proj = nn.Linear(d_model, num_heads, bias=True)  # the one bias of the official layer
        if use_gate:
            self.a_proj = nn.Linear(d_model, num_heads, bias=False)
            self.A_log = nn.Parameter(torch.empty(num_heads, dtype=torch.float32))
            self.dt_bias = nn.Parameter(torch.empty(num_heads, dtype=torch.float32))
            self.A_log._no_weight_decay = True
            self.dt_bias._no_weight_decay = True
        if use_output_gate:
            self.g_proj = nn.Linear(d_model, value_dim, bias=False)
        if use_output_norm:
            norm = GatedRMSNorm if use_output_gate else RMSNorm
            self.o_norm = norm(self.head_v_dim, eps=norm_eps)
        self.o_proj = nn.Linear(value_dim, d_model, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The Mamba2 gate init: A ~ U(0, 16); dt log-uniform in [1e-3, 0.1], floored at 1e-4."""
        if not self.use_gate:
            return
        with torch.no_grad():
            self.A_log.copy_(torch.empty_like(self.A_log).uniform_(0, 16).log())
            log_dt = torch.empty_like(self.dt_bias).uniform_(math.log(1e-3), math.log(0.1))
            dt = log_dt.exp().clamp(min=1e-4)
            self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus: softplus(dt_bias) = dt

    def init_state(self) -> GatedDeltaNetState:
        """An empty decode state (zeros), to pass as `state` on the first call."""
        return GatedDeltaNetState()

    def forward(
        self, x: torch.Tensor, cu_seqlens: torch.Tensor | None = None, state: GatedDeltaNetState | None = None
    ) -> tuple[torch.Tensor, GatedDeltaNetState | None]:
        check_packed(x, cu_seqlens)
        if state is not None and cu_seqlens is not None:
            raise ValueError("decode state and cu_seqlens cannot be combined: decode with one row per sequence")
        triton = self._uses_triton(x)
        q, k, v, conv_cache = self._qkv(x, cu_seqlens, None if state is None else state.conv, triton)
        gates = self._gate_projections(x)
        o, recurrent = self._mix(x, q, k, v, gates, cu_seqlens, state, triton)
        y = self.o_proj(self._norm_and_gate(x, o, triton).flatten(-2))
        return y, (GatedDeltaNetState(recurrent, conv_cache) if state is not None else None)

    def _uses_triton(self, x: torch.Tensor) -> bool:
        """Our Triton kernels (conv, gate, delta rule, output norm) where asked for, or by default on CUDA;
        else the PyTorch path (the CPU path)."""
        return self.backend == "triton" or (self.backend == "auto" and x.is_cuda)

    def _qkv(self, x, cu_seqlens, conv_cache, triton):
        """Projections, short conv + SiLU (or SiLU alone), split into heads; returns the new conv caches too.
        (Kept as three GEMMs: slices of one joined output would reach the conv and the delta rule strided, and
        cost a copy each there.)"""
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if self.use_short_conv:
            convs = (self.q_conv, self.k_conv, self.v_conv)
            (q, q_cache), (k, k_cache), (v, v_cache) = (
                conv(t, cu_seqlens, cache, triton)
                for conv, t, cache in zip(convs, (q, k, v), conv_cache or (None,) * 3)
            )
            conv_cache = (q_cache, k_cache, v_cache)
        else:
            q, k, v = F.silu(q), F.silu(k), F.silu(v)
        q, k = (t.unflatten(-1, (self.num_heads, self.head_dim)) for t in (q, k))
        return q, k, v.unflatten(-1, (self.num_heads, self.head_v_dim)), conv_cache

    def _gate_projections(self, x) -> dict[str, torch.Tensor]:
        """The per-head projections of the decay (a_proj) and of beta (b_proj) that this variant has, as one GEMM
        (two narrow GEMMs of num_heads columns otherwise), by name."""
        layers = {name: getattr(self, name) for name in ("a_proj", "b_proj") if hasattr(self, name)}
        if not layers:
            return {}
        joined = fused_linear(x, list(layers.values()))
        return dict(zip(layers, joined.split([layer.out_features for layer in layers.values()], dim=-1)))

    def _mix(self, x, q, k, v, gates, cu_seqlens, state, triton):
        """The recurrence over [B, T, H, D] heads; gates in float32 (float64 for float64 inputs)."""
        gate_dtype = torch.promote_types(x.dtype, torch.float32)
        if self.use_gate and triton:
            g = gdn_gate(gates["a_proj"], self.A_log, self.dt_bias)  # fused, fp32
        elif self.use_gate:
            dt = F.softplus(gates["a_proj"].to(gate_dtype) + self.dt_bias)
            g = -self.A_log.exp().to(gate_dtype) * dt  # log alpha_t
        else:
            g = x.new_zeros(x.shape[:-1] + (self.num_heads,), dtype=gate_dtype)
        common = dict(
            initial_state=None if state is None else state.recurrent,
            output_final_state=state is not None,
            cu_seqlens=cu_seqlens,
            use_qk_l2norm=self.qk_norm == "l2",
        )
        if not self.use_delta:
            return chunk_gated_linear_attention(q, k, v, g, chunk_size=self.chunk_size, **common)
        beta = torch.sigmoid(gates["b_proj"].to(gate_dtype))
        if triton:
            return chunk_gated_delta_rule(q, k, v, g, beta, recompute_states=self.recompute_states, **common)
        return chunk_gated_delta_rule_torch(q, k, v, g, beta, chunk_size=self.chunk_size, **common)

    def _norm_and_gate(self, x, o, triton):
        """RMSNorm(o) * w * SiLU(W_g x) per head, or whichever of the two parts is switched on."""
        if self.use_output_gate:
            gate = self.g_proj(x).unflatten(-1, (self.num_heads, self.head_v_dim))
            return self.o_norm(o, gate, triton) if self.use_output_norm else o * F.silu(gate)
        return self.o_norm(o) if self.use_output_norm else o
