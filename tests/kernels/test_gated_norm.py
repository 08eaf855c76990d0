import pytest
import torch

from gdn.kernels.gated_norm import gated_rms_norm, gated_rms_norm_reference, rms_norm
from tests.kernels.checks import DEVICE, relative_error

pytestmark = pytest.mark.usefixtures("nan_filled_buffers")  # tests/kernels/conftest.py


def rms_norm_reference(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def check_against_reference(shape, dtype, tolerance, eps=1e-5, gated=True, norm_before_gate=True):
    """Output and the gradients of x, gate and weight (inputs in `dtype`) vs the float64 reference; gated=False
    checks the plain rms_norm (no gate), norm_before_gate=False Mamba2's order RMSNorm(x * SiLU(gate)) * weight."""
    x = (3.0 * torch.randn(shape, dtype=torch.float64, device=DEVICE)).requires_grad_()
    gate = torch.randn(shape, dtype=torch.float64, device=DEVICE).requires_grad_()
    weight = (1.0 + 0.1 * torch.randn(shape[-1], dtype=torch.float64, device=DEVICE)).requires_grad_()
    leaves = [x, gate, weight] if gated else [x, weight]
    kernel, reference = (gated_rms_norm, gated_rms_norm_reference) if gated else (rms_norm, rms_norm_reference)
    order = dict(norm_before_gate=norm_before_gate) if gated else {}
    y = kernel(*(t.to(dtype) for t in leaves), eps=eps, **order)
    y_ref = reference(*leaves, eps=eps, **order)
    dy = torch.randn_like(y_ref)
    grads = torch.autograd.grad((y * dy).sum(), leaves)
    grads_ref = torch.autograd.grad((y_ref * dy).sum(), leaves)
    assert y.dtype == dtype and y.shape == y_ref.shape
    assert relative_error(y, y_ref) < tolerance
    for name, grad, grad_ref in zip(["x", "gate", "weight"] if gated else ["x", "weight"], grads, grads_ref):
        assert relative_error(grad, grad_ref) < tolerance, name


@pytest.mark.parametrize("shape", [(2, 37, 3, 64), (5, 2, 48), (1, 13, 4, 100)], ids=str)
def test_float32_matches_reference(shape):
    torch.manual_seed(sum(shape))
    check_against_reference(shape, torch.float32, 1e-5)


def test_spans_several_backward_programs():
    torch.manual_seed(0)
    check_against_reference((3, 131, 2, 32), torch.float32, 1e-5)  # 786 rows, 64 rows x 8 tiles per program


def test_bfloat16_within_bound():
    torch.manual_seed(1)
    check_against_reference((2, 21, 4, 64), torch.bfloat16, 1e-2)


def test_large_eps_is_used():
    torch.manual_seed(2)
    check_against_reference((3, 5, 2, 16), torch.float32, 1e-5, eps=0.5)


@pytest.mark.parametrize("shape", [(2, 37, 64), (3, 131, 32), (1, 13, 100)], ids=str)
def test_plain_rms_norm_float32_matches_reference(shape):
    torch.manual_seed(sum(shape))
    check_against_reference(shape, torch.float32, 1e-5, gated=False)


def test_plain_rms_norm_bfloat16_within_bound():
    torch.manual_seed(4)
    check_against_reference((2, 21, 96), torch.bfloat16, 1e-2, gated=False)


@pytest.mark.parametrize("shape, dtype, tolerance", [
    ((2, 37, 96), torch.float32, 1e-5),
    ((3, 131, 32), torch.float32, 1e-5),  # several backward programs
    ((2, 21, 160), torch.bfloat16, 1e-2),
], ids=str)
def test_gate_before_norm_matches_reference(shape, dtype, tolerance):
    torch.manual_seed(len(shape) + shape[-1])
    check_against_reference(shape, dtype, tolerance, norm_before_gate=False)


def test_rejects_mismatched_gate():
    with pytest.raises(ValueError, match="gate"):
        gated_rms_norm(torch.randn(2, 3, 8), torch.randn(2, 3, 4), torch.ones(8))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
def test_gpu_full_size_matches_reference(dtype, tolerance):
    """GDN's output norm at training size: 8 x 4096 tokens, 16 heads of 128."""
    torch.manual_seed(3)
    check_against_reference((8, 4096, 16, 128), dtype, tolerance)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
def test_gpu_gate_before_norm_full_size_matches_reference(dtype, tolerance):
    """Mamba2-1.3B's output norm: 8 x 4096 tokens, d_inner 4096, one group."""
    torch.manual_seed(6)
    check_against_reference((8, 4096, 4096), dtype, tolerance, norm_before_gate=False)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
def test_gpu_plain_rms_norm_full_size_matches_reference(dtype, tolerance):
    """The blocks' RMSNorm at a 1.3B model's training size: 8 x 4096 tokens of d_model 2048."""
    torch.manual_seed(5)
    check_against_reference((8, 4096, 2048), dtype, tolerance, gated=False)
