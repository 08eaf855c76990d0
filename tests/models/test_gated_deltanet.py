"""The GDN mixer against a float64 layer-level reference built on the step-by-step oracle, and its ablations."""
import pytest
import torch
import torch.nn.functional as F

import gdn.kernels
from gdn.kernels import recurrent_gated_delta_rule_reference
from gdn.models.gated_deltanet import GatedDeltaNet

D_MODEL, HEADS, HEAD_DIM = 16, 2, 4


def make_layer(seed=0, **kwargs):
    torch.manual_seed(seed)
    kwargs = {"num_heads": HEADS, "head_dim": HEAD_DIM, "chunk_size": 8, **kwargs}
    layer = GatedDeltaNet(D_MODEL, **kwargs).double()
    with torch.no_grad():  # larger than the default init so that every term visibly matters
        for name, p in layer.named_parameters():
            if name.endswith("bias") and "dt_bias" not in name:
                p.normal_()
    return layer


def random_x(B, T, seed=1):
    return torch.randn(B, T, D_MODEL, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def causal_conv(x, weight):
    """Depthwise causal conv of one sequence [T, C] with F.conv1d: y_t = sum_j w[:, j] x_{t-(K-1)+j}."""
    K = weight.shape[1]
    return F.conv1d(x.T[None], weight[:, None, :], padding=K - 1, groups=x.shape[1])[0, :, : x.shape[0]].T


def gated_linear_attention_steps(q, k, v, g, scale):
    """S_t = exp(g_t) S_{t-1} + k_t v_t^T, o_t = S_t^T (scale q_t), one sequence [T, H, D]."""
    S = q.new_zeros(q.shape[1], q.shape[2], v.shape[2])
    outputs = []
    for t in range(q.shape[0]):
        S = g[t].exp()[:, None, None] * S + k[t][:, :, None] * v[t][:, None, :]
        outputs.append(torch.einsum("hkv,hk->hv", S, scale * q[t]))
    return torch.stack(outputs)


def reference_layer(layer, x):
    """The mixer written out from gated-deltanet-facts.md for one sequence x [T, d_model], in float64."""
    H, Dk, Dv = layer.num_heads, layer.head_dim, layer.head_v_dim
    q, k, v = x @ layer.q_proj.weight.T, x @ layer.k_proj.weight.T, x @ layer.v_proj.weight.T
    if layer.use_short_conv:
        convs = (layer.q_conv, layer.k_conv, layer.v_conv)
        q, k, v = (causal_conv(t, conv.weight) for t, conv in zip((q, k, v), convs))
    q, k, v = F.silu(q).view(-1, H, Dk), F.silu(k).view(-1, H, Dk), F.silu(v).view(-1, H, Dv)
    if layer.qk_norm == "l2":
        q, k = (t / torch.sqrt((t * t).sum(-1, keepdim=True) + 1e-6) for t in (q, k))
    if layer.use_gate:
        g = -torch.exp(layer.A_log) * F.softplus(x @ layer.a_proj.weight.T + layer.dt_bias)
    else:
        g = x.new_zeros(x.shape[0], H)
    if layer.use_delta:
        beta = torch.sigmoid(x @ layer.b_proj.weight.T + layer.b_proj.bias)
        o, _ = recurrent_gated_delta_rule_reference(q[None], k[None], v[None], g[None], beta[None])
        o = o[0]
    else:
        o = gated_linear_attention_steps(q, k, v, g, Dk**-0.5)
    if layer.use_output_norm:
        o = o / torch.sqrt(o.pow(2).mean(-1, keepdim=True) + 1e-5) * layer.o_norm.weight
    if layer.use_output_gate:
        o = o * F.silu(x @ layer.g_proj.weight.T).view(-1, H, Dv)
    return o.reshape(x.shape[0], H * Dv) @ layer.o_proj.weight.T


def assert_close(a, b, tol=1e-9, what=""):
    assert ((a - b).norm() / b.norm()).item() < tol, what


ABLATIONS = [
    {},
    {"use_gate": False},
    {"use_delta": False},
    {"use_short_conv": False},
    {"use_output_gate": False},
    {"use_output_norm": False},
    {"use_output_gate": False, "use_output_norm": False},
    {"qk_norm": "none"},
    {"expand_v": 1},
]


@pytest.mark.parametrize("flags", ABLATIONS, ids=lambda f: ",".join(f"{k}={v}" for k, v in f.items()) or "default")
def test_layer_matches_reference(flags):
    layer = make_layer(backend="torch", **flags)
    x = random_x(2, 19)  # 19 = two full chunks of 8 and a partial one
    y, state = layer(x)
    assert state is None and y.shape == x.shape
    for b in range(2):
        assert_close(y[b], reference_layer(layer, x[b]))


@pytest.mark.parametrize("flags", ABLATIONS[1:], ids=lambda f: ",".join(f"{k}={v}" for k, v in f.items()))
def test_ablation_changes_the_output(flags):
    """Same shared weights, one switch flipped: the output moves (and the reference above says how)."""
    full = make_layer()
    ablated = make_layer(seed=1, **flags)
    shared = {name: p for name, p in full.state_dict().items() if name in ablated.state_dict()}
    shared = {name: p for name, p in shared.items() if p.shape == ablated.state_dict()[name].shape}
    ablated.load_state_dict(shared, strict=False)
    x = random_x(1, 12)
    difference = (full(x)[0] - ablated(x)[0]).norm() / full(x)[0].norm()
    assert difference > 1e-3


def test_ablations_drop_their_parameters():
    def top_level(layer):
        return {name.split(".")[0] for name, _ in layer.named_parameters()}

    full = top_level(make_layer())
    assert {"A_log", "dt_bias", "a_proj", "b_proj", "g_proj", "o_norm", "q_conv"} <= full
    assert not {"A_log", "dt_bias", "a_proj"} & top_level(make_layer(use_gate=False))
    assert "b_proj" not in top_level(make_layer(use_delta=False))
    assert not {"q_conv", "k_conv", "v_conv"} & top_level(make_layer(use_short_conv=False))
    assert "g_proj" not in top_level(make_layer(use_output_gate=False))
    assert "o_norm" not in top_level(make_layer(use_output_norm=False))


def test_packed_documents_equal_separate_runs():
    for flags in ({}, {"use_delta": False}):
        layer = make_layer(**flags)
        x = random_x(1, 23)
        cu_seqlens = torch.tensor([0, 9, 23], dtype=torch.int32)
        packed, _ = layer(x, cu_seqlens=cu_seqlens)
        separate = torch.cat([layer(x[:, :9])[0], layer(x[:, 9:])[0]], dim=1)
        assert_close(packed, separate, tol=1e-12)


def test_gate_init_and_no_weight_decay():
    layer = GatedDeltaNet(D_MODEL, num_heads=64, head_dim=4)
    A = layer.A_log.exp()
    dt = F.softplus(layer.dt_bias)
    assert layer.A_log.dtype == layer.dt_bias.dtype == torch.float32
    assert ((A > 0) & (A <= 16)).all() and A.max() > 8  # U(0, 16)
    assert ((dt >= 1e-3 * (1 - 1e-5)) & (dt <= 0.1 * (1 + 1e-5))).all()  # softplus(dt_bias) = dt in [1e-3, 0.1]
    assert layer.A_log._no_weight_decay and layer.dt_bias._no_weight_decay
    assert layer.dt_bias.dtype == torch.float32


def test_torch_and_auto_backends_agree_on_cpu():
    x = random_x(1, 10)
    torch_backend = make_layer(backend="torch")
    auto_backend = make_layer(backend="auto")
    assert_close(auto_backend(x)[0], torch_backend(x)[0], tol=1e-14)


@pytest.mark.parametrize("bad", [{"backend": "cuda"}, {"qk_norm": "rms"}, {"expand_v": 1.3}])
def test_rejects_bad_options(bad):
    with pytest.raises(ValueError):
        GatedDeltaNet(D_MODEL, num_heads=HEADS, head_dim=HEAD_DIM, **bad)


def test_triton_backend_matches_torch_backend():
    """Runs the Triton kernel (on CUDA, or the interpreter on CPU) through the layer: same numbers, same gradients."""
    if getattr(gdn.kernels, "chunk_gated_delta_rule", None) is None:
        pytest.skip("gdn.kernels.chunk_gated_delta_rule is not available")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    layers = [make_layer(backend=backend, head_dim=16).to(device, torch.float32) for backend in ("torch", "triton")]
    x = random_x(1, 21).to(device, torch.float32)
    cu_seqlens = torch.tensor([0, 5, 21], dtype=torch.int32, device=device)
    outputs = [layer(x, cu_seqlens=cu_seqlens)[0] for layer in layers]
    for y in outputs:
        y.pow(2).sum().backward()
    assert_close(outputs[1], outputs[0], tol=1e-5)
    for (name, p_torch), p_triton in zip(layers[0].named_parameters(), layers[1].parameters()):
        assert_close(p_triton.grad, p_torch.grad, tol=1e-4, what=name)
