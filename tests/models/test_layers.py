"""The small layers: short convolution, RoPE, RMSNorm variants, SwiGLU, packed-document helpers."""
import torch
import torch.nn.functional as F

from gdn.models.documents import document_ids, positions_in_documents
from gdn.models.mlp import GatedDown, SwiGLU, default_hidden_size
from gdn.models.norms import GatedRMSNorm, RMSNorm, RMSNormFunction
from gdn.models.rotary import RotaryEmbedding
from gdn.models.short_conv import ShortConvolution
from tests.kernels.checks import saved_bytes

CU_SEQLENS = torch.tensor([0, 3, 4, 9], dtype=torch.int32)


def test_document_helpers():
    assert document_ids(CU_SEQLENS, 9).tolist() == [0, 0, 0, 1, 2, 2, 2, 2, 2]
    assert positions_in_documents(CU_SEQLENS, 9).tolist() == [0, 1, 2, 0, 0, 1, 2, 3, 4]


def test_short_conv_is_causal_conv1d_plus_silu():
    torch.manual_seed(0)
    conv = ShortConvolution(6, kernel_size=4).double()
    x = torch.randn(2, 11, 6, dtype=torch.float64)
    want = F.silu(F.conv1d(x.transpose(1, 2), conv.weight[:, None, :], padding=3, groups=6)[..., :11]).transpose(1, 2)
    y, cache = conv(x)
    torch.testing.assert_close(y, want)
    torch.testing.assert_close(cache, x[:, -3:])


def test_short_conv_does_not_leak_across_documents():
    conv = ShortConvolution(5).double()
    x = torch.randn(1, 9, 5, dtype=torch.float64)
    packed, _ = conv(x, cu_seqlens=CU_SEQLENS)
    separate = torch.cat([conv(x[:, s:e])[0] for s, e in [(0, 3), (3, 4), (4, 9)]], dim=1)
    torch.testing.assert_close(packed, separate)


def test_short_conv_cache_continues_the_sequence():
    conv = ShortConvolution(5).double()
    x = torch.randn(2, 10, 5, dtype=torch.float64)
    full, _ = conv(x)
    first, cache = conv(x[:, :2], cache=torch.zeros(2, 3, 5, dtype=torch.float64))
    pieces = [first]
    for t in range(2, 10):
        y, cache = conv(x[:, t : t + 1], cache=cache)
        pieces.append(y)
    torch.testing.assert_close(torch.cat(pieces, dim=1), full)


def test_rotary_matches_complex_rotation_and_is_relative():
    rope = RotaryEmbedding(8, base=10000.0)
    x = torch.randn(1, 5, 2, 8, dtype=torch.float64)
    positions = torch.arange(5)
    as_complex = torch.complex(x[..., :4], x[..., 4:])  # pair i is (x_i, x_{i+4})
    angles = positions[:, None, None] * 10000.0 ** (-torch.arange(0, 8, 2, dtype=torch.float64) / 8)
    want = as_complex * torch.polar(torch.ones_like(angles), angles)
    torch.testing.assert_close(rope(x, positions), torch.cat([want.real, want.imag], dim=-1))
    q, k = torch.randn(2, 1, 1, 1, 8, dtype=torch.float64)
    score = lambda i, j: (rope(q, torch.tensor([i])) * rope(k, torch.tensor([j]))).sum()  # noqa: E731
    torch.testing.assert_close(score(7, 3), score(104, 100))


def test_rms_norms():
    norm = GatedRMSNorm(6, eps=1e-5).double()
    with torch.no_grad():
        norm.weight.normal_()
    x, gate = torch.randn(2, 3, 6, dtype=torch.float64), torch.randn(2, 3, 6, dtype=torch.float64)
    normalized = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * norm.weight
    torch.testing.assert_close(norm(x, gate), normalized * gate * torch.sigmoid(gate))
    torch.testing.assert_close(RMSNorm.forward(norm, x), normalized)
    assert RMSNorm(4)(torch.randn(3, 4, dtype=torch.bfloat16)).dtype == torch.bfloat16


def gated_down_torch(gate, up, weight):
    # the PyTorch path (the Triton one: tests/kernels/test_swiglu.py) on the joined gate_up the MLP's GEMM makes
    return GatedDown.apply(torch.cat([gate, up], dim=-1), weight, False)


def test_rms_norm_gradients_and_what_it_keeps():
    x = torch.randn(2, 5, 7, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(7, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda x, w: RMSNormFunction.apply(x, w, 1e-5), (x, weight))
    x16 = torch.randn(64, 256, dtype=torch.bfloat16, requires_grad=True)
    weight = torch.ones(256, requires_grad=True)
    # the bf16 input, the weight and one fp32 1/rms per row; no float32 copy of the rows
    assert saved_bytes(RMSNormFunction.apply, x16, weight, 1e-5) == 64 * 256 * 2 + 256 * 4 + 64 * 4


def test_gated_down_gradients_and_what_it_keeps():
    gate, up = (torch.randn(2, 3, 6, dtype=torch.float64, requires_grad=True) for _ in range(2))
    weight = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(gated_down_torch, (gate, up, weight))
    gate, up = (torch.randn(64, 96, dtype=torch.bfloat16, requires_grad=True) for _ in range(2))
    weight = torch.randn(32, 96, dtype=torch.bfloat16, requires_grad=True)
    assert saved_bytes(gated_down_torch, gate, up, weight) == 2 * 64 * 96 * 2 + 32 * 96 * 2  # gate, up, weight


def test_gated_down_in_bf16_matches_autograd_of_the_plain_formula():
    gen = torch.Generator().manual_seed(0)
    gate, up = (torch.randn(50, 96, generator=gen).bfloat16().requires_grad_() for _ in range(2))
    weight = (torch.randn(32, 96, generator=gen) / 10).requires_grad_()  # fp32 master weight, as under autocast
    dy = torch.randn(50, 32, generator=gen).bfloat16()
    results = []
    for fn in (gated_down_torch, lambda g, u, w: F.linear(F.silu(g) * u, w.bfloat16())):
        for t in (gate, up, weight):
            t.grad = None
        fn(gate, up, weight).backward(dy)
        results.append([gate.grad, up.grad, weight.grad])
    for ours, plain in zip(*results):
        assert ours.dtype == plain.dtype
        assert ((ours.float() - plain.float()).norm() / plain.float().norm()) < 1e-2


def test_swiglu():
    assert default_hidden_size(1536) == 4096 and default_hidden_size(2048) == 5632 and default_hidden_size(32) == 256
    mlp = SwiGLU(8, hidden_size=12).double()
    x = torch.randn(3, 8, dtype=torch.float64)
    hidden = F.silu(x @ mlp.gate_proj.weight.T) * (x @ mlp.up_proj.weight.T)
    torch.testing.assert_close(mlp(x), hidden @ mlp.down_proj.weight.T)
