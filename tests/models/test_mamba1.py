"""The Mamba1 mixer (Samba's Mamba layer) against a float64 reference written from the equations; packing,
decode, init."""
import math

import pytest
import torch
import torch.nn.functional as F

from gdn.kernels.selective_scan.reference import selective_scan_reference
from gdn.models import LanguageModel, build_mixer
from gdn.models.mamba1 import Mamba1
from gdn.train.optim import parameter_groups
from tests.models.decoding import decode_in_steps

D_MODEL = 16


def make_layer(seed=0, **kwargs):
    torch.manual_seed(seed)
    return Mamba1(D_MODEL, **{"d_state": 4, "chunk_size": 8, **kwargs}).double()


def random_x(B, T, seed=1):
    return torch.randn(B, T, D_MODEL, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def reference_layer(layer, u):
    """mamba1.py's equations for one sequence u [T, d_model], in float64, on the step-by-step scan."""
    x, z = (u @ layer.in_proj.weight.T).chunk(2, dim=-1)
    K = layer.conv.weight.shape[1]
    x = F.conv1d(x.T[None], layer.conv.weight[:, None, :], padding=K - 1, groups=x.shape[1])[0, :, : u.shape[0]].T
    x = F.silu(x)
    dt_low, B, C = (x @ layer.x_proj.weight.T).split([layer.dt_rank, layer.d_state, layer.d_state], dim=-1)
    dt = F.softplus(dt_low @ layer.dt_proj.weight.T + layer.dt_proj.bias)
    y, _ = selective_scan_reference(x[None], dt[None], -layer.A_log.exp(), B[None], C[None], layer.D)
    return (y[0] * F.silu(z)) @ layer.o_proj.weight.T


def test_matches_reference_outputs_and_parameter_gradients():
    layer = make_layer()
    x = random_x(2, 21)
    got, state = layer(x)
    want = torch.stack([reference_layer(layer, row) for row in x])
    assert state is None
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    weights = torch.randn(got.shape, dtype=torch.float64)
    params = list(layer.parameters())
    got_grads = torch.autograd.grad((got * weights).sum(), params)
    want_grads = torch.autograd.grad((want * weights).sum(), params)
    for (name, _), g, w in zip(layer.named_parameters(), got_grads, want_grads):
        assert ((g - w).norm() / w.norm()).item() < 1e-8, name


def test_packed_documents_equal_separate_rows():
    layer = make_layer()
    lengths = [5, 13, 3]
    x = random_x(1, sum(lengths))
    cu_seqlens = torch.tensor([0, 5, 18, 21], dtype=torch.int32)
    packed, _ = layer(x, cu_seqlens=cu_seqlens)
    for start, end in zip(cu_seqlens[:-1].tolist(), cu_seqlens[1:].tolist()):
        alone, _ = layer(x[:, start:end])
        torch.testing.assert_close(packed[:, start:end], alone, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("prompt", [0, 1, 5])
@torch.no_grad()
def test_prompt_then_tokens_equals_full_forward(prompt):
    layer = build_mixer("mamba", D_MODEL, d_state=4, chunk_size=4).double()
    x = random_x(2, 11)
    full, _ = layer(x)
    decoded, state = decode_in_steps(lambda chunk, s: layer(chunk, state=s), x, prompt, layer.init_state())
    torch.testing.assert_close(decoded, full, rtol=1e-10, atol=1e-12)
    assert state.ssm.shape == (2, layer.channels, 4) and state.conv.shape == (2, 3, layer.channels)


def test_state_and_packing_do_not_mix():
    layer = make_layer()
    with pytest.raises(ValueError, match="decode"):
        layer(random_x(1, 4), cu_seqlens=torch.tensor([0, 4], dtype=torch.int32), state=layer.init_state())


def test_samba_init_survives_the_language_model_init():
    model = LanguageModel(64, d_model=48, n_layers=2, layers=["mamba", "swa"],
                          mixers={"mamba": {}, "swa": {"num_heads": 2, "window": 8}})
    layer = model.blocks[0].mixer
    assert layer.channels == 96 and layer.d_state == 16 and layer.dt_rank == math.ceil(48 / 16)
    torch.testing.assert_close(-layer.A_log.exp(), -torch.arange(1.0, 17.0).expand(96, 16))
    torch.testing.assert_close(layer.D, torch.ones(96))
    dt = F.softplus(layer.dt_proj.bias)
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5) and dt.std() > 0
    assert layer.dt_proj.weight.abs().max() <= 3**-0.5
    no_decay = {id(p) for p in parameter_groups(model, 0.1)[1]["params"]}
    assert {id(layer.A_log), id(layer.D), id(layer.dt_proj.bias)} <= no_decay
    assert id(layer.x_proj.weight) not in no_decay
    assert layer.o_proj.weight.std().item() < 0.02 / math.sqrt(4) * 1.3  # the residual scale reached o_proj


def backend_pair(seed=0, **kwargs):
    """A torch-backend and a triton-backend layer with the same weights (float32)."""
    torch.manual_seed(seed)
    torch_layer = Mamba1(D_MODEL, backend="torch", **kwargs)
    triton_layer = Mamba1(D_MODEL, backend="triton", **kwargs)
    triton_layer.load_state_dict(torch_layer.state_dict())
    return torch_layer, triton_layer


def relative_error(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def test_triton_backend_matches_torch_backend_packed():
    """Triton short conv + selective scan (the interpreter on the CPU) against the PyTorch path, same weights:
    outputs and every parameter gradient, three packed documents."""
    torch_layer, triton_layer = backend_pair()
    x = random_x(1, 45).float()
    cu_seqlens = torch.tensor([0, 9, 40, 45], dtype=torch.int32)
    outputs = [layer(x, cu_seqlens=cu_seqlens)[0] for layer in (torch_layer, triton_layer)]
    weights = torch.randn(outputs[0].shape)
    for y in outputs:
        (y * weights).sum().backward()
    assert relative_error(outputs[1], outputs[0]) < 1e-5
    for (name, p_torch), p_triton in zip(torch_layer.named_parameters(), triton_layer.parameters()):
        assert relative_error(p_triton.grad, p_torch.grad) < 1e-4, name


@torch.no_grad()
def test_triton_backend_decode_equals_its_full_forward():
    _, layer = backend_pair(d_state=16)
    x = random_x(2, 7).float()
    full, _ = layer(x)
    y, state = layer(x[:, :4], state=layer.init_state())
    steps = [y]
    for t in range(4, 7):
        y, state = layer(x[:, t : t + 1], state=state)
        steps.append(y)
    assert relative_error(torch.cat(steps, dim=1), full) < 1e-5
    assert state.ssm.shape == (2, layer.channels, 16) and state.conv.shape == (2, 3, layer.channels)


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="backend"):
        Mamba1(D_MODEL, backend="cuda")


GPU_BOUNDS = {torch.float32: (1e-4, 1e-3), torch.bfloat16: (1e-2, 3e-2)}  # (output, parameter gradients)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_auto_backend_matches_torch_backend(dtype):
    """On CUDA the default backend runs our kernels; same weights as the PyTorch path, packed documents, fp32 or
    bf16 autocast (where the two paths round to bf16 at different points)."""
    torch.manual_seed(0)
    layers = [Mamba1(1024, backend=b).cuda() for b in ("torch", "auto")]
    layers[1].load_state_dict(layers[0].state_dict())
    x = torch.randn(1, 3000, 1024, device="cuda")
    cu_seqlens = torch.tensor([0, 1000, 2900, 3000], dtype=torch.int32, device="cuda")
    outputs = []
    for layer in layers:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            y, _ = layer(x, cu_seqlens=cu_seqlens)
        y.float().pow(2).sum().backward()
        outputs.append(y)
    errors = {"y": relative_error(outputs[1], outputs[0])}
    errors.update({name: relative_error(p_auto.grad, p_torch.grad)
                   for (name, p_torch), p_auto in zip(layers[0].named_parameters(), layers[1].parameters())})
    listed = ", ".join(f"{name} {error:.2e}" for name, error in errors.items())
    print(f"\n[gpu errors] Mamba1 layer auto vs torch, {dtype}: {listed}")
    output_bound, gradient_bound = GPU_BOUNDS[dtype]
    assert errors.pop("y") < output_bound
    assert all(error < gradient_bound for error in errors.values()), errors
