"""SwiGLU's element-wise Triton kernels (SiLU(gate) * up and its backward) against float64 autograd of the formula,
and the MLP's GatedDown on its Triton path against plain autograd."""
import pytest
import torch
import torch.nn.functional as F

from gdn.kernels.swiglu import swiglu_backward, swiglu_forward
from gdn.models.mlp import GatedDown
from tests.kernels.checks import DEVICE, relative_error

pytestmark = pytest.mark.usefixtures("nan_filled_buffers")  # tests/kernels/conftest.py


def check_against_float64(shape, dtype, tolerance, seed=0):
    """gate, up and dh of `shape`; gate and up reach the kernels joined in the last dim, as the MLP makes them."""
    gen = torch.Generator(DEVICE).manual_seed(seed)
    gate, up, dh = (2 * torch.randn(shape, generator=gen, device=DEVICE, dtype=torch.float64) for _ in range(3))
    gate64, up64 = gate.clone().requires_grad_(), up.clone().requires_grad_()
    h64 = F.silu(gate64) * up64
    dgate64, dup64 = torch.autograd.grad(h64, [gate64, up64], dh)
    gate, up, dh = gate.to(dtype), up.to(dtype), dh.to(dtype)
    gate_up = torch.cat([gate, up], dim=-1)  # the MLP's joined projection output
    h = swiglu_forward(gate_up)
    h_again, dgate_up = swiglu_backward(gate_up, dh)
    dgate, dup = dgate_up.chunk(2, dim=-1)
    assert h.dtype == dgate_up.dtype == dtype and dgate_up.shape == gate_up.shape
    assert torch.equal(h, h_again)
    for name, got, want in [("h", h, h64), ("dgate", dgate, dgate64), ("dup", dup, dup64)]:
        assert relative_error(got, want) < tolerance, name


@pytest.mark.parametrize("shape", [(3, 7, 5), (2049,), (2, 4096)], ids=str)  # partial, one-over and whole blocks
def test_float32_matches_float64(shape):
    check_against_float64(shape, torch.float32, 1e-6)


def test_bfloat16_within_rounding():
    check_against_float64((5, 333), torch.bfloat16, 8e-3, seed=1)


def test_rejects_a_last_dim_that_is_not_two_halves():
    with pytest.raises(ValueError, match=r"gate_up \[\.\.\., 2H\]"):
        swiglu_forward(torch.randn(2, 3, device=DEVICE))
    with pytest.raises(ValueError, match="needs dh"):
        swiglu_backward(torch.randn(2, 4, device=DEVICE), torch.randn(2, 3, device=DEVICE))


def test_gated_down_triton_path_matches_plain_autograd():
    gen = torch.Generator(DEVICE).manual_seed(2)
    gate, up = (torch.randn(3, 17, 40, generator=gen, device=DEVICE).requires_grad_() for _ in range(2))
    weight = torch.randn(24, 40, generator=gen, device=DEVICE).requires_grad_()
    dy = torch.randn(3, 17, 24, generator=gen, device=DEVICE)
    results = []
    for fn in (lambda g, u, w: GatedDown.apply(torch.cat([g, u], dim=-1), w, True),
               lambda g, u, w: F.linear(F.silu(g) * u, w)):
        y = fn(gate, up, weight)
        results.append([y, *torch.autograd.grad(y, [gate, up, weight], dy)])
    for name, ours, plain in zip(["y", "dgate", "dup", "dweight"], *results):
        assert relative_error(ours, plain) < 1e-5, name


@pytest.mark.gpu
def test_gpu_full_size_matches_float64():
    """A 1.3B MLP's hidden activations: 8 x 4096 tokens x 5632."""
    check_against_float64((8 * 4096, 5632), torch.bfloat16, 8e-3, seed=3)
    check_against_float64((8 * 4096, 5632), torch.float32, 1e-6, seed=4)
