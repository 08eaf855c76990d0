"""The Mamba2 mixer against a float64 layer written out from its equations, packing, decoding and init."""
import math

import pytest
import torch
import torch.nn.functional as F

from gdn.kernels.ssd import recurrent_ssd_reference
from gdn.models import MIXERS, LanguageModel
from gdn.models.mamba2 import Mamba2
from gdn.train.optim import parameter_groups
from tests.models.decoding import decode_in_steps

D_MODEL = 16
SMALL = {"d_state": 5, "headdim": 8, "chunk_size": 4}  # d_inner 32: 4 heads


@pytest.fixture(autouse=True)
def one_thread():
    """On the 2-core CPU, torch's float64 depthwise conv1d (the short conv) takes ~1 s a call with 2 threads and
    ~1 ms with one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_layer(seed=0, **kwargs):
    torch.manual_seed(seed)
    layer = Mamba2(D_MODEL, **{**SMALL, **kwargs}).double()
    with torch.no_grad():  # move D and the norm weight off their init values so that a mix-up shows
        layer.D.normal_()
        layer.norm.weight.normal_()
    return layer


def random_x(batch, T, seed=1):
    return torch.randn(batch, T, D_MODEL, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def reference_layer(layer, u):
    """mamba_ssm's Mamba2 forward for one sequence u [T, d_model], written out in float64."""
    H, P, G, N, E = layer.num_heads, layer.headdim, layer.ngroups, layer.d_state, layer.d_inner
    z, xBC, dt = (u @ layer.in_proj.weight.T).split([E, E + 2 * G * N, H], dim=-1)
    K = layer.conv.weight.shape[1]
    xBC = F.conv1d(xBC.T[None], layer.conv.weight[:, None, :], padding=K - 1, groups=xBC.shape[1])
    xBC = F.silu(xBC[0, :, : u.shape[0]].T)
    x, B, C = xBC.split([E, G * N, G * N], dim=-1)
    y, _ = recurrent_ssd_reference(
        x.view(1, -1, H, P), F.softplus(dt + layer.dt_bias)[None], -layer.A_log.exp(),
        B.view(1, -1, G, N), C.view(1, -1, G, N), layer.D,
    )
    gated = (y[0].reshape(-1, E) * F.silu(z)).view(-1, G, E // G)  # gate first (norm_before_gate=False) ...
    normed = gated / torch.sqrt(gated.pow(2).mean(-1, keepdim=True) + 1e-5)  # ... then RMSNorm per group
    return (normed.reshape(-1, E) * layer.norm.weight) @ layer.o_proj.weight.T


def relative_error(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("ngroups", [1, 2])
def test_matches_reference_outputs_and_parameter_gradients(ngroups):
    layer = make_layer(ngroups=ngroups)
    x = random_x(2, 11)
    got, _ = layer(x)
    want = torch.stack([reference_layer(layer, row) for row in x])
    assert relative_error(got, want) < 1e-9
    weights = torch.randn(got.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    params = list(layer.parameters())
    got_grads = torch.autograd.grad((got * weights).sum(), params)
    want_grads = torch.autograd.grad((want * weights).sum(), params)
    for (name, _), g, w in zip(layer.named_parameters(), got_grads, want_grads):
        assert relative_error(g, w) < 1e-9, name


def test_packed_documents_equal_separate_sequences():
    layer = make_layer(ngroups=2)
    x = random_x(1, 23)
    bounds = [0, 3, 12, 23]
    packed, _ = layer(x, cu_seqlens=torch.tensor(bounds, dtype=torch.int32))
    separate = torch.cat([layer(x[:, start:end])[0] for start, end in zip(bounds[:-1], bounds[1:])], dim=1)
    torch.testing.assert_close(packed, separate, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("prompt", [0, 5])
def test_prompt_then_tokens_equals_full_forward(prompt):
    layer = make_layer(ngroups=2)
    x = random_x(2, 9)
    full, _ = layer(x)
    decoded, state = decode_in_steps(lambda chunk, s: layer(chunk, state=s), x, prompt, layer.init_state())
    torch.testing.assert_close(decoded, full, rtol=1e-10, atol=1e-12)
    assert state.ssm.shape == (2, layer.num_heads, layer.d_state, layer.headdim)
    assert state.conv.shape == (2, 3, layer.d_inner + 2 * layer.ngroups * layer.d_state)


@pytest.mark.parametrize("ngroups", [1, 2])  # 1: the output norm's fused Triton kernel too
def test_triton_backend_matches_the_torch_backend(ngroups):
    torch.manual_seed(0)
    torch_layer = Mamba2(D_MODEL, **{**SMALL, "ngroups": ngroups})
    triton_layer = Mamba2(D_MODEL, **{**SMALL, "ngroups": ngroups, "backend": "triton"})
    triton_layer.load_state_dict(torch_layer.state_dict())
    x = random_x(1, 70).float()
    bounds = torch.tensor([0, 5, 70], dtype=torch.int32)
    outputs = [layer(x, cu_seqlens=bounds)[0] for layer in (torch_layer, triton_layer)]
    for y in outputs:
        y.square().sum().backward()
    assert relative_error(outputs[1], outputs[0]) < 1e-5
    for (name, p), q in zip(torch_layer.named_parameters(), triton_layer.parameters()):
        assert relative_error(q.grad, p.grad) < 1e-4, name


def test_state_and_packing_do_not_mix():
    layer = make_layer()
    with pytest.raises(ValueError, match="decode"):
        layer(random_x(1, 4), cu_seqlens=torch.tensor([0, 4], dtype=torch.int32), state=layer.init_state())


def test_defaults_and_parameter_shapes_follow_mamba_ssm():
    layer = Mamba2(128)  # expand 2, headdim 64, d_state 128, ngroups 1, d_conv 4
    d_inner, heads, conv_dim = 256, 4, 256 + 2 * 128
    assert layer.in_proj.weight.shape == (2 * d_inner + 2 * 128 + heads, 128)
    assert layer.conv.weight.shape == (conv_dim, 4)
    assert layer.o_proj.weight.shape == (128, d_inner) and layer.norm.weight.shape == (d_inner,)
    assert layer.A_log.shape == layer.dt_bias.shape == layer.D.shape == (heads,)
    with pytest.raises(ValueError, match="divide"):
        Mamba2(128, headdim=64, ngroups=3)


def test_init_ranges_and_no_weight_decay():
    layer = Mamba2(256, headdim=8)  # 64 heads: enough samples to see the ranges
    A = -layer.A_log.exp()
    assert (A <= -1).all() and (A >= -16).all() and A.max() > -4 and A.min() < -12
    dt = F.softplus(layer.dt_bias)
    assert (dt >= 1e-3 * (1 - 1e-5)).all() and (dt <= 0.1 * (1 + 1e-5)).all()
    assert dt.log().std() > 0.5 * (math.log(0.1) - math.log(1e-3)) / math.sqrt(12)  # spread log-uniformly
    torch.testing.assert_close(layer.D, torch.ones_like(layer.D))
    assert all(p._no_weight_decay for p in (layer.A_log, layer.dt_bias, layer.D))
    no_decay = {id(p) for group in parameter_groups(layer, 0.1) if group["weight_decay"] == 0 for p in group["params"]}
    assert {id(layer.A_log), id(layer.dt_bias), id(layer.D)} <= no_decay


def test_language_model_scales_the_output_projection_and_trains_on_packed_batches(monkeypatch):
    monkeypatch.setitem(MIXERS, "mamba2", Mamba2)  # whether or not the registry lists it yet
    torch.manual_seed(0)
    model = LanguageModel(32, D_MODEL, 2, ["mamba2"], {"mamba2": SMALL}, init_std=0.02)
    o_proj_std = torch.stack([block.mixer.o_proj.weight for block in model.blocks]).std().item()
    assert o_proj_std == pytest.approx(0.02 / 2, rel=0.2)  # N(0, 0.02) times 1/sqrt(2 n_layers)
    ids = torch.randint(32, (2, 9))
    logits = model(ids, cu_seqlens=torch.tensor([0, 4, 18], dtype=torch.int32))
    logits.sum().backward()
    assert logits.shape == (2, 9, 32) and all(p.grad is not None for p in model.parameters())
