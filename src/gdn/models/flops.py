"""Forward FLOPs of a LanguageModel, counted per module from its configuration (no tracing), for honest MFU.

Conventions (one sequence of `seq_len` tokens, one document per row; counts are exact integers per sequence):
- A matmul of [m, n] x [n, p] is 2 m n p FLOPs; a Linear is 2 * in * out per token (biases not counted);
  the embedding is a lookup (0); the LM head is a Linear (tied or not).
- Each mixer counts its own sequence term (see the functions below, the formula sits next to each count).
- The depthwise short convolution is 2 * kernel_size FLOPs per channel per token.
- RMSNorms are counted at 4 FLOPs per element (square, accumulate, scale by 1/rms, multiply by the weight).
  Other elementwise work is ignored: activations (SiLU), the gates' softplus/exp/sigmoid, RoPE, softmax,
  the q/k L2 norm, decay masks and residual adds. It is O(d) per token per layer against the projections'
  O(d^2), and it does not run on tensor cores.
- Every term is tagged `matmul` (matmuls, SDPA, convolutions: what torch.utils.flop_counter counts) or not
  (the norms, Mamba1's elementwise selective scan); `matmul_only=True` sums the matmul terms alone.
- Training FLOPs = 3 x forward (the backward pass taken as twice the forward), the usual MFU convention.

A mixer class gets its count through `@register_mixer_flops(MixerClass)`; a model with a mixer that has none
raises UnknownMixerError naming it.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from math import ceil

from torch import nn

from gdn.kernels.gated_delta._common import CHUNK as TRITON_CHUNK  # the Triton kernels' chunk (64)
from gdn.models.attention import Attention
from gdn.models.gated_deltanet import GatedDeltaNet
from gdn.models.mamba1 import Mamba1
from gdn.models.mamba2 import Mamba2
from gdn.models.short_conv import ShortConvolution

RMSNORM_FLOPS_PER_ELEMENT = 4


@dataclass(frozen=True)
class Term:
    """FLOPs of one piece of work over one sequence; matmul=False marks elementwise work (the norms)."""

    flops: int
    matmul: bool = True


Breakdown = dict[str, Term]  # term name -> Term, e.g. "mixer.q_proj", "mixer.kkt", "mlp.down_proj"


def sum_terms(terms: Breakdown, matmul_only: bool = False) -> int:
    return sum(term.flops for term in terms.values() if term.matmul or not matmul_only)


@dataclass
class ForwardFlops:
    """The breakdown of one forward pass over a sequence of seq_len tokens: one Breakdown per block, then the
    final norm and the LM head."""

    seq_len: int
    blocks: list[Breakdown]
    head: Breakdown

    def total(self, matmul_only: bool = False) -> int:
        """FLOPs per sequence (exact)."""
        return sum(sum_terms(terms, matmul_only) for terms in [*self.blocks, self.head])

    def per_token(self, matmul_only: bool = False) -> int:
        return round(self.total(matmul_only) / self.seq_len)


class UnknownMixerError(TypeError):
    """A mixer type without a registered FLOP count (never guessed)."""


MixerFlops = Callable[[nn.Module, int], Breakdown]
MIXER_FLOPS: dict[type[nn.Module], MixerFlops] = {}


def register_mixer_flops(mixer_class: type[nn.Module]) -> Callable[[MixerFlops], MixerFlops]:
    """Decorator: `count(mixer, seq_len) -> Breakdown` is the forward count of `mixer_class` (and subclasses)."""

    def register(count: MixerFlops) -> MixerFlops:
        MIXER_FLOPS[mixer_class] = count
        return count

    return register


def mixer_flops(mixer: nn.Module, seq_len: int) -> Breakdown:
    for cls in type(mixer).__mro__:
        if cls in MIXER_FLOPS:
            return MIXER_FLOPS[cls](mixer, seq_len)
    raise UnknownMixerError(
        f"no FLOP count for mixer type {type(mixer).__name__}; register one with "
        f"@register_mixer_flops({type(mixer).__name__}) in gdn/models/flops.py"
    )


def linear_terms(module: nn.Module, seq_len: int, prefix: str = "") -> Breakdown:
    """Every Linear inside `module`: 2 * in * out per token."""
    return {
        prefix + name: Term(2 * sub.in_features * sub.out_features * seq_len)
        for name, sub in module.named_modules()
        if isinstance(sub, nn.Linear)
    }


def short_conv_terms(module: nn.Module, seq_len: int, prefix: str = "") -> Breakdown:
    """Every depthwise ShortConvolution inside `module`: 2 * kernel_size per channel per token."""
    return {
        prefix + name: Term(2 * sub.kernel_size * sub.weight.shape[0] * seq_len)
        for name, sub in module.named_modules()
        if isinstance(sub, ShortConvolution)
    }


def rms_norm_term(dim: int, rows: int) -> Term:
    """RMSNorm over `dim` elements, `rows` times: 4 FLOPs per element."""
    return Term(RMSNORM_FLOPS_PER_ELEMENT * dim * rows, matmul=False)


def visible_keys(seq_len: int, window: int | None = None) -> int:
    """Keys summed over all queries under the causal mask, the query's own key included: query i sees
    min(i + 1, W) keys, so sum = T (T + 1) / 2 for full attention (or W >= T), else W (W + 1) / 2 + (T - W) W."""
    if window is None or window >= seq_len:
        return seq_len * (seq_len + 1) // 2
    return window * (window + 1) // 2 + (seq_len - window) * window


@register_mixer_flops(Attention)
def attention_flops(mixer: Attention, seq_len: int) -> Breakdown:
    """Causal (or sliding-window) attention. Only the visible (query, key) pairs count, the useful work:
        scores  Q K^T: 2 * heads * d_head * visible_keys(T, W)
        values  P V:   2 * heads * d_head * visible_keys(T, W)
    i.e. 4 * heads * d_head * (T + 1) / 2 per token for full attention; for SWA the window W replaces T once
    T > W. The CPU path runs a dense masked SDPA (all T x T pairs); that extra work is not useful and not counted."""
    pairs = visible_keys(seq_len, mixer.window)
    inner = mixer.num_heads * mixer.head_dim
    return {
        **linear_terms(mixer, seq_len),
        "scores": Term(2 * inner * pairs),
        "values": Term(2 * inner * pairs),
    }


def running_chunk_size(mixer: nn.Module, seq_len: int, has_triton_kernel: bool = True) -> int:
    """The chunk the running path uses: the Triton kernels' 64 (backend triton, or auto, which is Triton on
    CUDA, where MFU is measured), else the PyTorch path's chunk_size; a shorter sequence is one chunk."""
    uses_triton = mixer.backend != "torch" and has_triton_kernel
    return min(TRITON_CHUNK if uses_triton else mixer.chunk_size, seq_len)


@register_mixer_flops(GatedDeltaNet)
def gated_deltanet_flops(mixer: GatedDeltaNet, seq_len: int) -> Breakdown:
    """Projections (q, k, v, beta, alpha, output gate, output), short convs, per-head output RMSNorm, and the
    chunked gated delta rule (gated-deltanet-facts.md) per head over N = ceil(T / C) chunks of C tokens
    (a partial last chunk counts as full, as the kernels compute it), d_k = K, d_v = V:
        kkt         K K^T (A)                            2 C^2 K
        ut_inverse  T = (I + A)^-1, forward substitution (C^3 - C) / 3   (unit lower-triangular inverse)
        wy_w        W = T diag(beta) (gamma o K)         2 C^2 K
        wy_u        U = T diag(beta) V                   2 C^2 V
        state_w     W S_prev (V_new = U - W S_prev)      2 C K V
        state_pass  (gamma_C / gamma o K)^T V_new        2 C K V
        out_inter   (gamma o Q) S_prev                   2 C K V
        out_qk      Q K^T                                2 C^2 K
        out_intra   (Q K^T o Gamma o causal) V_new       2 C^2 V
    With use_delta=False (gated linear attention) there is no A, T, W, U: V_new = V and only the state pass
    and the three output terms remain. Per token and head, with the delta rule: 2 C (3 K + 2 V) + 6 K V + (C^2 - 1) / 3.
    The chunk products count as dense C x C blocks (what the chunked
    algorithm computes); the inverse counts at its textbook cost, whatever method a path uses (the PyTorch
    path doubles inverted diagonal blocks, the Triton kernel inverts 16 x 16 blocks and multiplies them out)."""
    C = running_chunk_size(mixer, seq_len, has_triton_kernel=mixer.use_delta)  # no Triton kernel without delta
    K, V = mixer.head_dim, mixer.head_v_dim
    chunk_heads = ceil(seq_len / C) * mixer.num_heads  # every term below is per chunk and head
    terms = {**linear_terms(mixer, seq_len), **short_conv_terms(mixer, seq_len)}
    if mixer.use_output_norm:
        terms["o_norm"] = rms_norm_term(V, seq_len * mixer.num_heads)
    if mixer.use_delta:
        terms |= {
            "kkt": Term(chunk_heads * 2 * C * C * K),
            "ut_inverse": Term(chunk_heads * (C**3 - C) // 3),
            "wy_w": Term(chunk_heads * 2 * C * C * K),
            "wy_u": Term(chunk_heads * 2 * C * C * V),
            "state_w": Term(chunk_heads * 2 * C * K * V),
        }
    return terms | {
        "state_pass": Term(chunk_heads * 2 * C * K * V),
        "out_inter": Term(chunk_heads * 2 * C * K * V),
        "out_qk": Term(chunk_heads * 2 * C * C * K),
        "out_intra": Term(chunk_heads * 2 * C * C * V),
    }


@register_mixer_flops(Mamba2)
def mamba2_flops(mixer: Mamba2, seq_len: int) -> Breakdown:
    """in_proj (z, xBC, dt), the short conv over xBC, the gated RMSNorm over d_inner, o_proj, and the chunked SSD
    (scalar-decay linear attention with q = C, k = B, v = dt o x) per head over N = ceil(T / C) chunks of C tokens,
    d_state = N_s, headdim = P (B and C are shared by the heads of a group but multiplied per head):
        out_qk      C B^T                                2 C^2 N_s
        out_intra   (C B^T o L) V                        2 C^2 P
        state_pass  ((gamma_end / gamma) o B)^T V        2 C N_s P   (the decayed sum into the state is elementwise)
        out_inter   (gamma o C) S                        2 C N_s P
    Per token and head: 2 C (N_s + P) + 4 N_s P. The D x skip and the gates are elementwise (ignored)."""
    C, N, P = running_chunk_size(mixer, seq_len), mixer.d_state, mixer.headdim
    chunk_heads = ceil(seq_len / C) * mixer.num_heads  # every term below is per chunk and head
    return {
        **linear_terms(mixer, seq_len),
        **short_conv_terms(mixer, seq_len),
        "norm": rms_norm_term(mixer.d_inner, seq_len),
        "out_qk": Term(chunk_heads * 2 * C * C * N),
        "out_intra": Term(chunk_heads * 2 * C * C * P),
        "state_pass": Term(chunk_heads * 2 * C * N * P),
        "out_inter": Term(chunk_heads * 2 * C * N * P),
    }


@register_mixer_flops(Mamba1)
def mamba1_flops(mixer: Mamba1, seq_len: int) -> Breakdown:
    """in_proj (x, z), the short conv over x, x_proj (dt_low, B, C), dt_proj (a DtProjection, dt_rank -> Dch,
    counted like a Linear: 2 r Dch per token), o_proj, and the selective scan itself, per token with
    Dch = expand * d_model channels and N = d_state states per channel:
        scan_state   h = exp(dt A) o h + (dt x) B      4 Dch N   (dt A, decay times h, times B, add; exp not counted)
        scan_output  y = C . h                          2 Dch N
    The scan is the recurrence's own work, whatever the implementation: elementwise per (channel, state), on
    CUDA cores as in mamba_ssm's kernel, so it is tagged matmul=False. The chunked PyTorch path computes the
    same scan as dense masked L x L products per chunk (2 L Dch N per token, more than the recurrence); that
    extra work is not useful and not counted. The D skip and the SiLU gate are elementwise O(Dch) (ignored)."""
    channels_states = mixer.channels * mixer.d_state * seq_len
    dt_proj = mixer.dt_proj.weight
    return {
        **linear_terms(mixer, seq_len),
        **short_conv_terms(mixer, seq_len),
        "dt_proj": Term(2 * dt_proj.shape[0] * dt_proj.shape[1] * seq_len),
        "scan_state": Term(4 * channels_states, matmul=False),
        "scan_output": Term(2 * channels_states, matmul=False),
    }


def block_flops(block: nn.Module, seq_len: int) -> Breakdown:
    """Pre-norm block: mixer norm, the mixer's own count, then (if present) the MLP norm and the SwiGLU's
    three Linears (gate, up: d -> hidden; down: hidden -> d)."""
    d_model = block.mixer_norm.weight.shape[0]
    terms = {"mixer_norm": rms_norm_term(d_model, seq_len)}
    terms |= {f"mixer.{name}": term for name, term in mixer_flops(block.mixer, seq_len).items()}
    if block.mlp is not None:
        terms["mlp_norm"] = rms_norm_term(d_model, seq_len)
        terms |= linear_terms(block.mlp, seq_len, prefix="mlp.")
    return terms


def forward_flops(model: nn.Module, seq_len: int) -> ForwardFlops:
    """The per-block breakdown of one forward pass of a LanguageModel over seq_len tokens (embedding: 0)."""
    head = {
        "norm": rms_norm_term(model.norm.weight.shape[0], seq_len),
        "lm_head": Term(2 * model.lm_head.in_features * model.lm_head.out_features * seq_len),
    }
    return ForwardFlops(seq_len, [block_flops(block, seq_len) for block in model.blocks], head)


def flops_per_token(model: nn.Module, seq_len: int, matmul_only: bool = False) -> int:
    """Forward FLOPs per token at sequence length seq_len (rounded to an integer)."""
    return forward_flops(model, seq_len).per_token(matmul_only)


def training_flops_per_token(model: nn.Module, seq_len: int) -> int:
    """Forward + backward: 3 x the forward count."""
    return 3 * flops_per_token(model, seq_len)
