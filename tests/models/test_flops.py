"""FLOP counts (gdn.models.flops) against torch.utils.flop_counter over the PyTorch paths, and by hand.

FlopCounterMode counts matmuls and convolutions only, so the comparisons use the matmul terms (matmul_only=True)
and are exact (equality), after two documented differences between what a CPU path executes and what we count:
- the UT inverse: we count forward substitution, (C^3 - C) / 3 per chunk and head; the PyTorch path doubles
  inverted diagonal blocks, two b x b matmuls per pair of blocks at b = 1, 2, ..., C / 2: 2 C (C^2 - 1) / 3;
- attention: we count the visible (query, key) pairs; SDPA's math path multiplies all T x T pairs.
"""
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from gdn.models import LanguageModel
from gdn.models.attention import Attention, SlidingWindowAttention
from gdn.models.flops import (
    UnknownMixerError, attention_flops, flops_per_token, forward_flops, gated_deltanet_flops, mamba1_flops,
    mamba2_flops, mixer_flops, running_chunk_size, sum_terms, training_flops_per_token, visible_keys,
)
from gdn.models.gated_deltanet import GatedDeltaNet
from gdn.models.mamba1 import Mamba1
from gdn.models.mamba2 import Mamba2

T, CHUNK, D_MODEL, HEADS, HEAD_DIM, WINDOW = 128, 32, 64, 2, 32, 48


def counted_flops(module, *inputs) -> int:
    """What FlopCounterMode sees in one forward (SDPA through its math path, which decomposes into matmuls)."""
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        module(*inputs)
    return counter.get_total_flops()


def block_doubling_flops(mixer: GatedDeltaNet, seq_len: int) -> int:
    """The PyTorch path's (I + A)^-1, per chunk and head: at each block size b = 1, 2, ..., C / 2, C / (2b) pairs
    of blocks take two b x b matmuls (2 b^3 FLOPs each), 2 C b^2 in all: 2 C (C^2 - 1) / 3 (C a power of two)."""
    C = running_chunk_size(mixer, seq_len)
    per_chunk_head = sum(2 * C * b * b for b in (2**i for i in range((C - 1).bit_length())))
    return (seq_len // C) * mixer.num_heads * per_chunk_head


def dense_attention_flops(mixer: Attention, seq_len: int) -> int:
    """Q K^T and P V over all T x T pairs: 2 * 2 * heads * d_head * T^2."""
    return 4 * mixer.num_heads * mixer.head_dim * seq_len**2


def cpu_path_extra(mixer, terms) -> int:
    """Matmul FLOPs the CPU path executes beyond our count (the two differences of the module docstring)."""
    if isinstance(mixer, GatedDeltaNet) and mixer.use_delta:
        return block_doubling_flops(mixer, T) - terms["ut_inverse"].flops
    if isinstance(mixer, Attention):
        return dense_attention_flops(mixer, T) - terms["scores"].flops - terms["values"].flops
    return 0


@pytest.mark.parametrize("ablation", [
    {}, {"use_delta": False}, {"use_gate": False}, {"use_short_conv": False},
    {"use_output_gate": False}, {"use_output_norm": False}, {"expand_v": 2},
])
def test_gated_deltanet_matches_flop_counter(ablation):
    mixer = GatedDeltaNet(D_MODEL, HEADS, HEAD_DIM, backend="torch", chunk_size=CHUNK, **ablation)
    terms = gated_deltanet_flops(mixer, T)
    expected = sum_terms(terms, matmul_only=True) + cpu_path_extra(mixer, terms)
    assert counted_flops(mixer, torch.randn(1, T, D_MODEL)) == expected


def test_gated_deltanet_terms_by_hand():
    """Per chunk and head (C = 32, K = V = 32, N = 4 chunks, 2 heads): the formulas of the docstring."""
    mixer = GatedDeltaNet(D_MODEL, HEADS, HEAD_DIM, expand_v=1, backend="torch", chunk_size=CHUNK)
    terms = gated_deltanet_flops(mixer, T)
    C = K = V = 32
    per_chunk_head = {"kkt": 2 * C * C * K, "ut_inverse": (C**3 - C) // 3, "wy_w": 2 * C * C * K,
                      "wy_u": 2 * C * C * V, "state_w": 2 * C * K * V, "state_pass": 2 * C * K * V,
                      "out_inter": 2 * C * K * V, "out_qk": 2 * C * C * K, "out_intra": 2 * C * C * V}
    assert {name: terms[name].flops for name in per_chunk_head} == {
        name: 4 * 2 * flops for name, flops in per_chunk_head.items()}
    assert terms["q_conv"].flops == 2 * 4 * HEADS * K * T  # 2 * kernel width per channel per token
    assert terms["o_norm"].flops == 4 * HEADS * V * T and not terms["o_norm"].matmul


def test_gated_deltanet_chunk_follows_the_running_path():
    def chunk(**kwargs) -> int:  # out_qk = chunks * heads * 2 C^2 K = T * heads * 2 C K
        terms = gated_deltanet_flops(GatedDeltaNet(D_MODEL, HEADS, HEAD_DIM, chunk_size=CHUNK, **kwargs), T)
        return terms["out_qk"].flops // (T * HEADS * 2 * HEAD_DIM)

    assert chunk(backend="torch") == CHUNK
    assert chunk(backend="auto") == chunk(backend="triton") == 64  # the Triton kernels' chunk
    assert chunk(backend="auto", use_delta=False) == CHUNK  # gated linear attention has no Triton kernel
    assert running_chunk_size(GatedDeltaNet(D_MODEL, HEADS, HEAD_DIM, backend="triton"), 40) == 40  # one chunk


def test_mamba2_matches_flop_counter():
    """The SSD has no inverse and no masked SDPA: the matmul terms are exactly what the PyTorch path runs."""
    mixer = Mamba2(D_MODEL, d_state=16, headdim=16, ngroups=2, chunk_size=CHUNK, backend="torch")
    terms = mamba2_flops(mixer, T)
    assert counted_flops(mixer, torch.randn(1, T, D_MODEL)) == sum_terms(terms, matmul_only=True)
    heads, chunks, C, N, P = 2 * D_MODEL // 16, T // CHUNK, CHUNK, 16, 16
    assert terms["out_qk"].flops == chunks * heads * 2 * C * C * N
    assert terms["state_pass"].flops == terms["out_inter"].flops == chunks * heads * 2 * C * N * P
    assert terms["conv"].flops == 2 * 4 * (2 * D_MODEL + 2 * 2 * N) * T  # over x, B, C of every group
    assert terms["norm"].flops == 4 * 2 * D_MODEL * T and not terms["norm"].matmul


@pytest.mark.parametrize("mixer", [Attention(D_MODEL, HEADS), SlidingWindowAttention(D_MODEL, HEADS, window=WINDOW)],
                         ids=["attn", "swa"])
def test_attention_matches_flop_counter(mixer):
    terms = attention_flops(mixer, T)
    expected = sum_terms(terms, matmul_only=True) + cpu_path_extra(mixer, terms)
    assert counted_flops(mixer, torch.randn(1, T, D_MODEL)) == expected


def test_visible_keys_by_hand():
    # T = 10, W = 4: queries see 1, 2, 3, 4, 4, 4, 4, 4, 4, 4 keys
    assert visible_keys(10, 4) == 1 + 2 + 3 + 4 * 7 == 34
    assert visible_keys(10) == visible_keys(10, 10) == visible_keys(10, 64) == 55
    assert visible_keys(10, 1) == 10
    swa = SlidingWindowAttention(D_MODEL, HEADS, window=4)
    assert attention_flops(swa, 10)["scores"].flops == 2 * HEADS * (D_MODEL // HEADS) * 34
    # full attention: 4 * heads * d_head * (T + 1) / 2 per token
    full = attention_flops(Attention(D_MODEL, HEADS), T)
    assert (full["scores"].flops + full["values"].flops) / T == 4 * D_MODEL * (T + 1) / 2


def small_model(**kwargs):
    mixers = {"gdn": {"num_heads": HEADS, "head_dim": HEAD_DIM, "backend": "torch", "chunk_size": CHUNK},
              "swa": {"num_heads": HEADS, "window": WINDOW}, "attn": {"num_heads": HEADS}}
    return LanguageModel(64, D_MODEL, 3, ["gdn", "swa", "attn"], mixers, **kwargs)


def test_language_model_matches_flop_counter():
    model = small_model()
    count = forward_flops(model, T)
    cpu_total = count.total(matmul_only=True) + sum(
        cpu_path_extra(block.mixer, {name.removeprefix("mixer."): term for name, term in terms.items()})
        for block, terms in zip(model.blocks, count.blocks)
    )
    assert counted_flops(model, torch.randint(0, 64, (1, T))) == cpu_total
    # elementwise: 2 norms per block + the final norm at 4 * d per token, and the GDN per-head output norm (d_v 64)
    assert count.total() - count.total(matmul_only=True) == 4 * D_MODEL * T * (2 * 3 + 1) + 4 * HEADS * 64 * T
    assert count.head["lm_head"].flops == 2 * D_MODEL * 64 * T  # embedding: 0 (a lookup)
    assert flops_per_token(model, T) == round(count.total() / T)
    assert training_flops_per_token(model, T) == 3 * flops_per_token(model, T)


def test_model_without_mlp_counts_no_mlp():
    terms = forward_flops(small_model(mlp=False), T).blocks[0]
    assert not any(name.startswith("mlp") for name in terms)


def test_unknown_mixer_type_is_named():
    with pytest.raises(UnknownMixerError, match="Identity"):
        mixer_flops(torch.nn.Identity(), T)


def chunked_scan_flops(mixer: Mamba1, seq_len: int) -> int:
    """What the chunked PyTorch selective scan runs as matmuls (torch.einsum -> bmm), per chunk of L tokens:
    decay x CB summed over n (2 L^2 Dch N), then times dt x summed over j (2 L^2 Dch), and the carried-in and
    carried-out states (one contraction over n, one over j: 2 L Dch N each)."""
    L, Dch, N = mixer.chunk_size, mixer.channels, mixer.d_state
    return (seq_len // L) * (2 * L * L * Dch * N + 2 * L * L * Dch + 4 * L * Dch * N)


def test_mamba1_matches_flop_counter():
    """Matmul terms (projections, dt_proj, conv) plus the chunked scan's einsums are what the PyTorch path runs;
    the scan itself is counted as the recurrence's elementwise work, 6 Dch N per token."""
    mixer = Mamba1(D_MODEL, d_state=8, chunk_size=16)
    terms = mamba1_flops(mixer, T)
    expected = sum_terms(terms, matmul_only=True) + chunked_scan_flops(mixer, T)
    assert counted_flops(mixer, torch.randn(1, T, D_MODEL)) == expected
    channels, rank = 2 * D_MODEL, mixer.dt_rank
    assert terms["in_proj"].flops == 2 * D_MODEL * 2 * channels * T
    assert terms["x_proj"].flops == 2 * channels * (rank + 2 * 8) * T
    assert terms["dt_proj"].flops == 2 * rank * channels * T
    assert terms["conv"].flops == 2 * 4 * channels * T
    assert terms["scan_state"].flops == 4 * channels * 8 * T and not terms["scan_state"].matmul
    assert terms["scan_output"].flops == 2 * channels * 8 * T and not terms["scan_output"].matmul
