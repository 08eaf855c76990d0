"""Sliding-window attention on CUDA: FlexAttention (backend auto/flex) against SDPA with the dense mask (backend
sdpa), same weights, forward and backward, bf16 autocast, at Samba-1.3B's attention shape and with packed
documents. Relative errors are of the same order as bf16 rounding of the outputs (about 4e-3)."""
import pytest
import torch

from gdn.models.attention import SlidingWindowAttention

pytestmark = pytest.mark.gpu


def relative_error(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def flex_and_sdpa_layers(d_model, num_heads, window):
    torch.manual_seed(0)
    flex = SlidingWindowAttention(d_model, num_heads, window=window, backend="auto").cuda()
    sdpa = SlidingWindowAttention(d_model, num_heads, window=window, backend="sdpa").cuda()
    sdpa.load_state_dict(flex.state_dict())
    return flex, sdpa


def run(layer, x, cu_seqlens=None):
    x = x.detach().clone().requires_grad_()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = layer(x, cu_seqlens=cu_seqlens)[0]
    y.float().pow(2).mean().backward()
    return y, x.grad, {name: p.grad for name, p in layer.named_parameters()}


@pytest.mark.parametrize("batch, length, cu_seqlens", [
    (4, 4096, None),                       # Samba-1.3B: 18 heads of 128, window 2048
    (1, 8192, [0, 1000, 5000, 5001, 8192]),  # packed documents, one of a single token
])
def test_flex_matches_sdpa_with_a_dense_mask(batch, length, cu_seqlens):
    flex, sdpa = flex_and_sdpa_layers(2304, 18, 2048)
    x = torch.randn(batch, length, 2304, device="cuda")
    cu = None if cu_seqlens is None else torch.tensor(cu_seqlens, dtype=torch.int32, device="cuda")
    y_flex, dx_flex, grads_flex = run(flex, x, cu)
    y_sdpa, dx_sdpa, grads_sdpa = run(sdpa, x, cu)
    assert relative_error(y_flex, y_sdpa) < 1e-2
    assert relative_error(dx_flex, dx_sdpa) < 2e-2
    for name, grad in grads_sdpa.items():
        assert relative_error(grads_flex[name], grad) < 2e-2, name
