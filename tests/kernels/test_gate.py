import math

import pytest
import torch

from gdn.kernels.gate import gdn_gate, gdn_gate_reference
from tests.kernels.checks import DEVICE, relative_error

pytestmark = pytest.mark.usefixtures("nan_filled_buffers")  # tests/kernels/conftest.py


def gdn_gate_parameters(num_heads):
    """A_log = log U(0, 16) and dt_bias = inverse-softplus of a log-uniform dt in [1e-3, 0.1], as GDN initialises."""
    A_log = torch.empty(num_heads, dtype=torch.float64, device=DEVICE).uniform_(1e-2, 16).log()
    dt = torch.exp(torch.empty_like(A_log).uniform_(math.log(1e-3), math.log(0.1)))
    dt_bias = dt + torch.log(-torch.expm1(-dt))
    return A_log.requires_grad_(), dt_bias.requires_grad_()


def check_against_reference(shape, a_dtype, a_scale=1.0):
    """g and the gradients of a, A_log and dt_bias (a in `a_dtype`, parameters fp32) vs the float64 reference.

    All math is fp32, so everything matches to 1e-5 except da, which is returned in a's dtype.
    """
    a = (a_scale * torch.randn(shape, dtype=torch.float64, device=DEVICE)).requires_grad_()
    A_log, dt_bias = gdn_gate_parameters(shape[-1])
    leaves = [a, A_log, dt_bias]
    g = gdn_gate(a.to(a_dtype), A_log.float(), dt_bias.float())
    g_ref = gdn_gate_reference(a.to(a_dtype).double(), A_log.float().double(), dt_bias.float().double())
    dg = torch.randn_like(g_ref)
    grads = torch.autograd.grad((g * dg).sum(), leaves)
    grads_ref = torch.autograd.grad((g_ref * dg).sum(), leaves)
    assert g.dtype == torch.float32 and g.shape == g_ref.shape
    assert relative_error(g, g_ref) < 1e-5
    tolerances = {"a": 1e-5 if a_dtype == torch.float32 else 1e-2, "A_log": 1e-5, "dt_bias": 1e-5}
    for (name, tolerance), grad, grad_ref in zip(tolerances.items(), grads, grads_ref):
        assert relative_error(grad, grad_ref) < tolerance, name


@pytest.mark.parametrize("shape", [(2, 37, 6), (3, 11, 16), (1, 300, 5)], ids=str)
def test_float32_matches_reference(shape):
    torch.manual_seed(sum(shape))
    check_against_reference(shape, torch.float32)


@pytest.mark.filterwarnings("ignore:overflow encountered in exp")  # the interpreter's sigmoid of -100 -> 0, right
def test_wide_inputs_cover_both_softplus_branches():
    torch.manual_seed(0)
    check_against_reference((2, 129, 4), torch.float32, a_scale=30.0)


def test_bfloat16_input_keeps_fp32_math():
    """g from a bf16 `a` matches the reference on that rounded input to fp32 accuracy."""
    torch.manual_seed(1)
    check_against_reference((2, 21, 8), torch.bfloat16)


def test_rejects_mismatched_parameters():
    with pytest.raises(ValueError, match="A_log"):
        gdn_gate(torch.randn(2, 3, 4), torch.zeros(3), torch.zeros(4))


@pytest.mark.gpu
def test_gpu_full_size_matches_reference():
    """GDN's gate at training size: 8 x 4096 tokens, 16 heads."""
    torch.manual_seed(2)
    check_against_reference((8, 4096, 16), torch.float32)
    check_against_reference((8, 4096, 16), torch.bfloat16)
