"""Our Triton kernels as torch.library custom ops (torch.ops.gdn.*): torch.library.opcheck at small shapes on the
interpreter (schema, fake-tensor shapes, autograd registration, AOT dispatch). Their values and gradients against the
float64 references are the other kernel tests (test_gated_delta_triton.py, test_short_conv.py, test_gate.py,
test_gated_norm.py), which run through these ops."""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before any kernel import, as in tests/conftest.py

import pytest
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import gdn.kernels  # noqa: F401  registers torch.ops.gdn
from tests.kernels.checks import DEVICE


def randn(*shape, dtype=torch.float32, requires_grad=True, scale=1.0):
    return (scale * torch.randn(*shape, device=DEVICE, dtype=dtype)).requires_grad_(requires_grad)


def delta_rule_args(l2norm: bool, with_state: bool, varlen: bool, recompute: bool):
    B, T, H, K, V = (1, 40, 2, 16, 16) if varlen else (2, 20, 2, 16, 16)
    k = randn(B, T, H, K)
    return (randn(B, T, H, K, scale=K**-0.5), k if l2norm else F.normalize(k, dim=-1).detach().requires_grad_(),
            randn(B, T, H, V), F.logsigmoid(torch.randn(B, T, H, device=DEVICE) + 2).requires_grad_(),
            torch.rand(B, T, H, device=DEVICE).requires_grad_(), K**-0.5,
            randn(3 if varlen else B, H, K, V) if with_state else None, True,
            torch.tensor([0, 7, 33, 40], dtype=torch.int32, device=DEVICE) if varlen else None,
            l2norm, recompute)


@pytest.mark.parametrize("l2norm,with_state,varlen,recompute", [(True, True, False, False), (False, False, False, True),
                                                                (True, True, True, False), (True, True, True, True)])
def test_gated_delta_rule_op(l2norm, with_state, varlen, recompute):
    torch.manual_seed(0)
    args = delta_rule_args(l2norm, with_state, varlen, recompute)
    torch.library.opcheck(torch.ops.gdn.chunk_gated_delta_rule_fwd.default, args)


def test_short_conv_op():
    torch.manual_seed(0)
    x, weight, bias, state = randn(2, 10, 8), randn(8, 4, scale=0.5), randn(8), randn(2, 8, 3)
    torch.library.opcheck(torch.ops.gdn.short_conv_fwd.default, (x, weight, bias, state, None, True))
    cu_seqlens = torch.tensor([0, 3, 10], dtype=torch.int32, device=DEVICE)
    torch.library.opcheck(torch.ops.gdn.short_conv_fwd.default, (x[:1], weight, None, None, cu_seqlens, False))


def test_gate_op():
    torch.manual_seed(0)
    torch.library.opcheck(torch.ops.gdn.gate_fwd.default, (randn(2, 5, 3), randn(3), randn(3)))


@pytest.mark.parametrize("gate,gate_first", [(True, False), (True, True), (False, False)])
def test_gated_rms_norm_op(gate, gate_first):
    torch.manual_seed(0)
    torch.library.opcheck(torch.ops.gdn.gated_rms_norm_fwd.default,
                          (randn(2, 5, 2, 8), randn(2, 5, 2, 8) if gate else None, randn(8), 1e-5, gate_first))


@pytest.mark.parametrize("with_d,with_state,varlen", [(True, True, False), (False, False, False), (True, True, True)])
def test_chunk_ssd_op(with_d, with_state, varlen):
    torch.manual_seed(0)
    B, T, H, P, G, N = (1, 70, 4, 8, 2, 16) if varlen else (2, 30, 4, 8, 1, 16)
    cu_seqlens = torch.tensor([0, 9, 70], dtype=torch.int32, device=DEVICE) if varlen else None
    sequences = 2 if varlen else B
    args = (randn(B, T, H, P), torch.rand(B, T, H, device=DEVICE).requires_grad_(), randn(H) if with_d else None,
            randn(B * T, G, N, scale=N**-0.5), randn(B * T, G, N, scale=N**-0.5),
            (-torch.rand(B * T, H, device=DEVICE)).requires_grad_(),
            randn(sequences, H, N, P) if with_state else None, True, cu_seqlens)
    torch.library.opcheck(torch.ops.gdn.chunk_ssd_fwd.default, args)


def selective_scan_args(full: bool, varlen: bool):
    # full: D, an initial state, dt_bias with softplus and the final state; else none of them
    B, T, channels, N = (1, 40, 6, 4) if varlen else (2, 20, 6, 4)
    cu_seqlens = torch.tensor([0, 17, 40], dtype=torch.int32, device=DEVICE) if varlen else None
    sequences = 2 if varlen else B
    args = (randn(B, T, channels), (0.1 * torch.rand(B, T, channels, device=DEVICE)).requires_grad_(),
            (-torch.rand(channels, N, device=DEVICE) - 0.5).requires_grad_(), randn(B, T, N), randn(B, T, N),
            randn(channels) if full else None, randn(sequences, channels, N) if full else None, full, cu_seqlens,
            randn(channels, scale=0.1) if full else None, full)
    return args


@pytest.mark.parametrize("full,varlen", [(True, False), (False, False), (True, True)])
def test_selective_scan_op(full, varlen):
    torch.manual_seed(0)
    torch.library.opcheck(torch.ops.gdn.selective_scan_fwd.default, selective_scan_args(full, varlen))


class ZeroFills(TorchDispatchMode):
    """The shapes of the zero tensors made while active (autograd materialises a missing output gradient so)."""

    def __init__(self):
        super().__init__()
        self.shapes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.zeros.default:
            self.shapes.append(tuple(args[0]))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("op,args", [
    ("chunk_gated_delta_rule_fwd", lambda: delta_rule_args(True, True, False, False)),
    ("selective_scan_fwd", lambda: selective_scan_args(True, False)),
])
def test_residual_outputs_get_no_zero_gradients(op, args):
    # The ops return their backward's residuals as outputs; a zero gradient for each, the size of all of them
    # together, was written on every backward (0.9 GiB and 0.26 ms of the gated delta rule at 8 x 4096 x 16 x 128).
    torch.manual_seed(0)
    out, final, *residuals = getattr(torch.ops.gdn, op)(*args())
    loss = out.sum() + final.sum()
    with ZeroFills() as zeros:
        loss.backward()
    assert not {tuple(r.shape) for r in residuals if r.numel()} & set(zeros.shapes), zeros.shapes
