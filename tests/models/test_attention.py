"""Full and sliding-window causal attention against an explicitly masked softmax; packing; the registry."""
import pytest
import torch

from gdn.models.attention import Attention, SlidingWindowAttention
from gdn.models.mixers import MIXERS, build_mixer

D_MODEL, HEADS = 16, 2


def make(name, seed=0, **kwargs):
    torch.manual_seed(seed)
    return build_mixer(name, D_MODEL, num_heads=HEADS, **kwargs).double()


def random_x(B, T, seed=1):
    return torch.randn(B, T, D_MODEL, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def hand_attention(layer, x, window=None):
    """softmax(q k^T / sqrt(d) + mask) v with token i seeing i-W+1 .. i, written out for one sequence [T, D]."""
    T, H, D = x.shape[0], layer.num_heads, layer.head_dim
    positions = torch.arange(T)
    q = layer.rotary((x @ layer.q_proj.weight.T).view(1, T, H, D), positions)[0]
    k = layer.rotary((x @ layer.k_proj.weight.T).view(1, T, H, D), positions)[0]
    v = (x @ layer.v_proj.weight.T).view(T, H, D)
    scores = torch.einsum("ihd,jhd->hij", q, k) / D**0.5
    for i in range(T):
        for j in range(T):
            if j > i or (window is not None and i - j >= window):
                scores[:, i, j] = float("-inf")
    y = torch.einsum("hij,jhd->ihd", scores.softmax(-1), v)
    return y.reshape(T, H * D) @ layer.o_proj.weight.T


def test_registry():
    assert MIXERS["attn"] is Attention and MIXERS["swa"] is SlidingWindowAttention
    with pytest.raises(ValueError, match=r"unknown mixer 'mamba3'; choose one of") as info:
        build_mixer("mamba3", D_MODEL)
    assert str(sorted(MIXERS)) in str(info.value)


def test_full_attention_matches_hand_computation():
    layer = make("attn")
    x = random_x(2, 9)
    y, state = layer(x)
    assert state is None and layer.head_dim == D_MODEL // HEADS
    for b in range(2):
        torch.testing.assert_close(y[b], hand_attention(layer, x[b]))


def test_small_window_matches_hand_computation_and_differs_from_full():
    swa = make("swa", window=3)
    x = random_x(1, 10)
    y, _ = swa(x)
    torch.testing.assert_close(y[0], hand_attention(swa, x[0], window=3))
    full = make("attn")
    full.load_state_dict(swa.state_dict())
    assert (y - full(x)[0]).norm() > 1e-2 * y.norm()
    torch.testing.assert_close(y[:, :3], full(x)[0][:, :3])  # the first W tokens see their whole past


def test_window_covering_the_sequence_equals_full_attention():
    swa = make("swa", window=10)
    full = make("attn")
    full.load_state_dict(swa.state_dict())
    x = random_x(2, 10)
    torch.testing.assert_close(swa(x)[0], full(x)[0])
    assert SlidingWindowAttention(D_MODEL, HEADS).window == 2048


@pytest.mark.parametrize("name, kwargs", [("attn", {}), ("swa", {"window": 4}), ("attn", {"head_dim": 4})])
def test_packed_documents_equal_separate_runs(name, kwargs):
    layer = make(name, **kwargs)
    x = random_x(1, 17)
    packed, _ = layer(x, cu_seqlens=torch.tensor([0, 6, 7, 17], dtype=torch.int32))
    separate = torch.cat([layer(x[:, s:e])[0] for s, e in [(0, 6), (6, 7), (7, 17)]], dim=1)
    torch.testing.assert_close(packed, separate)


def test_rejects_batched_packing():
    with pytest.raises(ValueError, match="batch size 1"):
        make("attn")(random_x(2, 4), cu_seqlens=torch.tensor([0, 2, 4], dtype=torch.int32))
