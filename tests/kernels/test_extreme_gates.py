"""Every decaying kernel over the whole range of gates a trained model reaches, on inputs distributed as the layer
feeds them: per-token log decays exactly 0, near 0, strong (-U(0, 300)) and hard resets (-1e4) mixed in one
sequence; sequences that end inside a chunk (varlen), initial states, positive q, k, v (after SiLU). Outputs, final
states and every gradient must be finite and within the bounds of the ordinary tests against a float64
step-by-step oracle (issue 13).

CPU: the Triton interpreter (whose tf32 dots round their operands as the GPU's do) and the PyTorch paths at small
shapes. GPU (marked `gpu`): real shapes against the float64 chunked PyTorch computation, and FLA's input
distribution for the gated delta rule's half-precision gradients.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before any kernel import, as in tests/conftest.py

import pytest
import torch.nn.functional as F

from gdn.kernels import chunk_gated_delta_rule, chunk_gated_delta_rule_torch, gdn_gate
from gdn.kernels import recurrent_gated_delta_rule, recurrent_gated_delta_rule_reference
from gdn.kernels.gate.reference import gdn_gate_reference
from gdn.kernels.gated_delta import _common
from gdn.kernels.selective_scan import chunk_selective_scan, selective_scan_reference, selective_scan_torch
from gdn.kernels.ssd import chunk_ssd, chunk_ssd_torch, recurrent_ssd_reference
from tests.kernels import checks
from tests.kernels.checks import DEVICE, relative_error

FP32 = 1e-5
HALF = dict(o=5e-3, y=5e-3, final_state=5e-3, dq=8e-3, dk=8e-3, dv=8e-3, dx=8e-3, dinitial_state=8e-3,
            dg=2e-2, dbeta=2e-2, ddt=2e-2, dA=2e-2, dB=2e-2, dC=2e-2, dD=2e-2)
# Under strong decays and resets the gradients of the gates themselves are sums of terms that cancel to a small
# remainder (dA is one scalar per head: the sum over every token of dg dt), so fp32's rounding of the
# chunk-local cumulative gates shows there first; measured 1.5e-5 to 5.8e-5 (the PyTorch paths alike).
FP32_GATE_GRADIENTS = dict(dg=1e-4, ddt=1e-4, dA=1e-4)
# The PyTorch gated delta rule (the CPU training path, batched over chunks) lands at 1.05e-5 on the mixed gates
# in fp32 where the Triton kernels land at 4e-6: the same cumulative-gate rounding.
FP32_TORCH_PATH = 2e-5


@pytest.fixture(autouse=True)
def nan_filled_buffers(monkeypatch):
    monkeypatch.setattr(_common, "poison_outputs", True)


def extreme_log_decays(shape, gen, device=DEVICE):
    """Log decays <= 0: a quarter each exactly 0, near 0 (-U(0, 1e-3)), strong (-U(0, 300)), hard reset (-1e4)."""
    kind = torch.randint(0, 4, shape, generator=gen, device=device)
    near_zero = -torch.rand(shape, generator=gen, device=device) * 1e-3
    strong = -torch.rand(shape, generator=gen, device=device) * 300
    g = torch.where(kind == 0, torch.zeros_like(near_zero), near_zero)
    g = torch.where(kind == 2, strong, g)
    return torch.where(kind == 3, torch.full_like(g, -1e4), g)


def positive(*shape, gen, device=DEVICE):
    """Mostly positive, as after the layer's SiLU."""
    return F.silu(torch.randn(*shape, generator=gen, device=device))


def gated_delta_inputs(B, T, H, K, V, dtype, num_states, gates, seed=0):
    gen = torch.Generator(DEVICE).manual_seed(seed)
    g = extreme_log_decays((B, T, H), gen) if gates == "extreme" else -torch.rand(B, T, H, generator=gen,
                                                                                    device=DEVICE) * 200
    inputs = dict(q=positive(B, T, H, K, gen=gen), k=positive(B, T, H, K, gen=gen), v=positive(B, T, H, V, gen=gen),
                  g=g, beta=torch.sigmoid(torch.randn(B, T, H, generator=gen, device=DEVICE)))
    inputs = {name: x if name == "g" else x.to(dtype) for name, x in inputs.items()}
    inputs["initial_state"] = torch.randn(num_states, H, K, V, generator=gen, device=DEVICE)
    return inputs


def scaled_errors(ours: dict, expected: dict) -> dict[str, float]:
    """Relative errors; a gradient whose reference is itself negligible (the initial state's under strong decay
    everywhere: exp(-100) and less) is measured against unit scale instead, since no relative bound can hold."""
    errors = {}
    for name, want in expected.items():
        scale = want.double().norm().item()
        unit = want.numel() ** 0.5
        errors[name] = relative_error(ours[name], want) if scale > 1e-6 * unit else \
            ((ours[name].double() - want.double()).norm() / unit).item()
    return errors


def compare(kernel, reference, inputs, output_name, **kwargs):
    ours, cotangents = checks.outputs_and_gradients(kernel, inputs, output_name, **kwargs)
    doubles = {name: x.double() for name, x in inputs.items()}
    expected, _ = checks.outputs_and_gradients(reference, doubles, output_name, cotangents, **kwargs)
    return scaled_errors(ours, expected)


def assert_within(errors: dict, dtype: torch.dtype, fp32: float = FP32, half: dict | None = None):
    if dtype == torch.float32:
        bounds = {name: FP32_GATE_GRADIENTS.get(name, fp32) for name in errors}
    else:
        bounds = {name: (half or HALF)[name] for name in errors}
    failed = {name: e for name, e in errors.items() if not e < bounds[name]}
    assert not failed, f"over bounds {bounds}: {failed} (all: {errors})"


VARLEN = [0, 75, 130]  # the first sequence ends inside its second chunk


@pytest.mark.parametrize("path", ["triton", "torch"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("gates", ["extreme", "strong"])
def test_gated_delta_rule_chunked(path, dtype, gates):
    if path == "torch" and dtype != torch.float32:
        pytest.skip("the PyTorch path computes in fp32 whatever it is given")
    inputs = gated_delta_inputs(1, 130, 2, 32, 32, dtype, num_states=2, gates=gates)
    fn = chunk_gated_delta_rule if path == "triton" else chunk_gated_delta_rule_torch
    cu_seqlens = torch.tensor(VARLEN, dtype=torch.int32, device=DEVICE)
    errors = compare(fn, recurrent_gated_delta_rule_reference, inputs, "o", cu_seqlens=cu_seqlens,
                     use_qk_l2norm=True)
    assert_within(errors, dtype, FP32 if path == "triton" else FP32_TORCH_PATH)


def test_gated_delta_rule_dense_batch_with_a_partial_last_chunk():
    inputs = gated_delta_inputs(2, 70, 2, 16, 16, torch.float32, num_states=2, gates="extreme", seed=1)
    errors = compare(chunk_gated_delta_rule, recurrent_gated_delta_rule_reference, inputs, "o", use_qk_l2norm=True)
    assert_within(errors, torch.float32)


def test_gated_delta_rule_recurrent_decode():
    inputs = gated_delta_inputs(1, 20, 2, 16, 16, torch.float32, num_states=1, gates="extreme", seed=2)
    o, final = recurrent_gated_delta_rule(**inputs, output_final_state=True, use_qk_l2norm=True)
    o_ref, final_ref = recurrent_gated_delta_rule_reference(**{n: x.double() for n, x in inputs.items()},
                                                            output_final_state=True, use_qk_l2norm=True)
    assert relative_error(o, o_ref) < FP32 and relative_error(final, final_ref) < FP32


def fla_distribution(B, T, H, K, V, dtype, scale_kind="0.1", gate_normalizer=1.0, zero_gates=0.0, seed=0,
                     device=DEVICE):
    """FLA's test inputs for this operator: q, k, v ~ U(0, 1), k L2-normalised, g = logsigmoid(U(0, 1)) /
    gate_normalizer, beta = sigmoid(U(0, 1)), h0 ~ N(0, 1); a fraction of gates set to exactly 0."""
    gen = torch.Generator(device).manual_seed(seed)
    rand = lambda *shape: torch.rand(*shape, generator=gen, device=device)  # noqa: E731
    g = F.logsigmoid(rand(B, T, H)) / gate_normalizer
    g = torch.where(rand(B, T, H) < zero_gates, torch.zeros_like(g), g)
    inputs = dict(q=rand(B, T, H, K).to(dtype), k=F.normalize(rand(B, T, H, K), dim=-1).to(dtype),
                  v=rand(B, T, H, V).to(dtype), g=g, beta=torch.sigmoid(rand(B, T, H)).to(dtype),
                  initial_state=torch.randn(B, H, K, V, generator=gen, device=device))
    return inputs, (0.1 if scale_kind == "0.1" else K**-0.5)


def test_gated_delta_rule_half_gradients_on_fla_inputs():
    """dg and dbeta in bf16 within 2e-2 of float64 for positive inputs (issue 13; the GPU cases below at real
    shapes). The interpreter rounds tf32 dots as the GPU does, so a product of fp32 intermediates taken at tf32
    shows here too."""
    inputs, scale = fla_distribution(1, 200, 2, 64, 64, torch.bfloat16)
    errors = compare(chunk_gated_delta_rule, chunk_gated_delta_rule_torch, inputs, "o", scale=scale)
    assert_within(errors, torch.bfloat16)


def ssd_inputs(T, H, P, G, N, num_states, dtype=torch.float64, seed=0, device=DEVICE):
    """Mamba2's SSD with dt up to 10 and A in -[1, 17] (dt A to -170), and every 7th token a hard reset
    (dt = 1000: dt A below -1e3)."""
    gen = torch.Generator(device).manual_seed(seed)
    rand = lambda *shape: torch.rand(*shape, generator=gen, device=device, dtype=torch.float64)  # noqa: E731
    randn = lambda *shape: torch.randn(*shape, generator=gen, device=device, dtype=torch.float64)  # noqa: E731
    dt = rand(1, T, H) * 10
    dt[:, ::7] = 1e3
    inputs = dict(x=randn(1, T, H, P), dt=dt, A=-(1 + 16 * rand(H)), B=randn(1, T, G, N), C=randn(1, T, G, N),
                  D=randn(H), initial_state=randn(num_states, H, N, P))
    return {name: (x.to(dtype) if name in ("x", "B", "C") else x.float() if dtype != torch.float64 else x)
            for name, x in inputs.items()}


def in_float32(fn):
    """fn on float32 copies of float64 inputs, its results back in float64 (both sides draw the same cotangents)."""
    def wrapped(**tensors):
        outs = fn(**{n: t.float() if torch.is_tensor(t) and t.is_floating_point() else t for n, t in tensors.items()})
        return tuple(None if o is None else o.double() for o in outs)
    return wrapped


@pytest.mark.parametrize("fn", [chunk_ssd, chunk_ssd_torch], ids=["triton", "torch"])
def test_ssd_strong_decay_and_resets(fn):
    cu_seqlens = torch.tensor(VARLEN, dtype=torch.int32, device=DEVICE)
    errors = compare(in_float32(fn), recurrent_ssd_reference, ssd_inputs(130, 2, 16, 1, 16, 2), "y",
                     cu_seqlens=cu_seqlens)
    assert_within(errors, torch.float32)


def scan_inputs(T, D, N, num_states, seed=0, device=DEVICE):
    gen = torch.Generator(device).manual_seed(seed)
    rand = lambda *shape: torch.rand(*shape, generator=gen, device=device, dtype=torch.float64)  # noqa: E731
    randn = lambda *shape: torch.randn(*shape, generator=gen, device=device, dtype=torch.float64)  # noqa: E731
    dt = rand(1, T, D) * 10
    dt[:, ::7] = 1e3
    return dict(x=randn(1, T, D), dt=dt, A=-(1 + 16 * rand(D, N)), B=randn(1, T, N), C=randn(1, T, N), D=randn(D),
                initial_state=randn(num_states, D, N))


@pytest.mark.parametrize("fn", [chunk_selective_scan, selective_scan_torch], ids=["triton", "torch"])
def test_selective_scan_strong_decay_and_resets(fn):
    cu_seqlens = torch.tensor(VARLEN, dtype=torch.int32, device=DEVICE)
    errors = compare(in_float32(fn), selective_scan_reference, scan_inputs(130, 8, 16, 2), "y",
                     cu_seqlens=cu_seqlens)
    assert_within(errors, torch.float32)


def test_gate_kernel_from_no_decay_to_hard_resets():
    """g = -exp(A_log) softplus(a + dt_bias) for a from -1e4 (g -> 0) to 1e4 (g -> -1e4 exp(A_log)): finite,
    and its gradients match the float64 reference."""
    a = torch.cat([torch.linspace(-1e4, 1e4, 255), torch.tensor([0.0])]).reshape(128, 2).to(DEVICE)
    A_log = torch.log(torch.tensor([1.0, 16.0], device=DEVICE))
    dt_bias = torch.tensor([-4.0, 2.0], device=DEVICE)
    tensors = [t.clone().requires_grad_() for t in (a, A_log, dt_bias)]
    doubles = [t.double().detach().requires_grad_() for t in (a, A_log, dt_bias)]
    g, g_ref = gdn_gate(*tensors), gdn_gate_reference(*doubles)
    cotangent = torch.randn(g.shape, generator=torch.Generator(DEVICE).manual_seed(0), device=DEVICE)
    (g * cotangent).sum().backward()
    (g_ref * cotangent.double()).sum().backward()
    assert relative_error(g, g_ref) < FP32
    for ours, want in zip(tensors, doubles):
        assert relative_error(ours.grad, want.grad) < FP32


# ---- GPU: real shapes -------------------------------------------------------------------------------------------

GPU_SHAPES = {  # name: (B, T, H, K, V, cu_seqlens)
    "8x4096x16x128x128": (8, 4096, 16, 128, 128, None),
    "4x4096x6x256x512": (4, 4096, 6, 256, 512, None),
    "varlen-16K-x16x128x128": (1, 16384, 16, 128, 128, [0, 1000, 5097, 5100, 9001, 16384]),
}


def gpu_log(label, errors):
    print(f"\n[gpu errors] {label}: " + ", ".join(f"{n} {e:.2e}" for n, e in errors.items()))


@pytest.mark.gpu
@pytest.mark.parametrize("name", list(GPU_SHAPES))
def test_gpu_gated_delta_rule_extreme_gates(name):
    B, T, H, K, V, cu_seqlens = GPU_SHAPES[name]
    num_states = B if cu_seqlens is None else len(cu_seqlens) - 1
    cu = None if cu_seqlens is None else torch.tensor(cu_seqlens, dtype=torch.int32, device=DEVICE)
    inputs = gated_delta_inputs(B, T, H, K, V, torch.bfloat16, num_states=num_states, gates="extreme", seed=3)
    errors = compare(chunk_gated_delta_rule, chunk_gated_delta_rule_torch, inputs, "o", cu_seqlens=cu,
                     use_qk_l2norm=True)
    gpu_log(f"extreme gates {name} bf16", errors)
    assert_within(errors, torch.bfloat16)


FLA_CASES = {  # name: (B, T, H, K, V, dtype, scale, gate_logit_normalizer, fraction of zero gates)
    "4x1024x4x128-bf16": (4, 1024, 4, 128, 128, torch.bfloat16, "0.1", 1.0, 0.0),
    "4x1024x4x128-fp16": (4, 1024, 4, 128, 128, torch.float16, "0.1", 1.0, 0.0),
    "2x4096x4x64-bf16-norm0.01": (2, 4096, 4, 64, 64, torch.bfloat16, "0.1", 0.01, 0.0),
    "2x2048x4x100-fp16-rsqrtK": (2, 2048, 4, 100, 100, torch.float16, "rsqrt", 1.0, 0.5),
    "2x2048x2x256-bf16-norm10": (2, 2048, 2, 256, 256, torch.bfloat16, "rsqrt", 10.0, 0.1),
    "2x1000x4x128-fp16-zero-gates": (2, 1000, 4, 128, 128, torch.float16, "0.1", 1.0, 0.5),
    "1x4096x4x256-fp16-rsqrtK": (1, 4096, 4, 256, 256, torch.float16, "rsqrt", 1.0, 0.0),
}


# Before the WY backward kernel took K K^T in a loop of its own (_wy.py says why), dg was 5-11% and dbeta 2-5% off
# in 5 of the first 6 cases on an H200 (Triton 3.6), against FLA's bound and ours, 2e-2. dk and dv get 1.2e-2 here,
# not 8e-3: at K = V = 256 with gates near 0 (normaliser 10: memory over hundreds of tokens of positive keys) they
# measured 9.6e-3 and 9.2e-3 on the H200 (dg 1.5e-2, dbeta 9.4e-3), the other cases at most 4.9e-3; not analysed.
FLA_INPUT_BOUNDS = HALF | dict(dk=1.2e-2, dv=1.2e-2)


@pytest.mark.gpu
@pytest.mark.parametrize("name", list(FLA_CASES))
def test_gpu_gated_delta_rule_half_gradients_on_fla_inputs(name):
    B, T, H, K, V, dtype, scale_kind, normalizer, zeros = FLA_CASES[name]
    inputs, scale = fla_distribution(B, T, H, K, V, dtype, scale_kind, normalizer, zeros, seed=4)
    errors = compare(chunk_gated_delta_rule, chunk_gated_delta_rule_torch, inputs, "o", scale=scale)
    gpu_log(f"FLA inputs {name}", errors)
    assert_within(errors, dtype, half=FLA_INPUT_BOUNDS)


@pytest.mark.gpu
def test_gpu_ssd_extreme_decay():
    inputs = ssd_inputs(16384, 32, 64, 2, 128, 6, dtype=torch.bfloat16, seed=5)
    cu = torch.tensor([0, 1000, 5097, 5100, 9000, 13191, 16384], dtype=torch.int32, device=DEVICE)
    errors = compare(chunk_ssd, chunk_ssd_torch, inputs, "y", cu_seqlens=cu)
    gpu_log("SSD extreme decay varlen 16K x32x64 N128", errors)
    assert_within(errors, torch.bfloat16)


@pytest.mark.gpu
def test_gpu_selective_scan_extreme_decay():
    inputs = scan_inputs(4096, 1024, 16, 1, seed=6)
    inputs = {n: (x.to(torch.bfloat16) if n in ("x", "B", "C") else x.float()) for n, x in inputs.items()}
    errors = compare(chunk_selective_scan, selective_scan_torch, inputs, "y")
    gpu_log("selective scan extreme decay 4096 x 1024 x 16", errors)
    assert_within(errors, torch.bfloat16)
