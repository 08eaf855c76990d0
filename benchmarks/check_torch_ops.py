"""GPU check of the Triton kernels as torch.ops.gdn custom ops (issue 5), printed as one table of lines.

    python benchmarks/check_torch_ops.py            # CUDA: d_model 1024, 8 heads x 128, 4 x 2048 tokens, bf16
    python benchmarks/check_torch_ops.py --tiny     # any machine (CPU: Triton interpreter), seconds: a smoke run

1. torch.library.opcheck of the four forward ops at small shapes on the device;
2. graph breaks (torch._dynamo.explain) of a Triton GDN block, dense and packed (cu_seqlens): expect 0;
3. inductor-compiled block vs eager: relative error of the output and every parameter gradient;
4. op-level selective checkpointing: delta rule forward kernel runs per step (expect 1; full checkpointing 2);
5. ms per forward+backward step: eager, compiled whole (now), and compiled with the mixer kept out of the graph
   (torch.compiler.disable, what parallelize did before the ops were registered);
6. the same graph-break count, compiled-vs-eager errors and step times for a Mamba2 block (SSD op) and a Mamba1
   block (selective scan op).
Needs only torch and triton (no Hydra, MLflow).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch.nn.functional as F  # noqa: E402

from gdn.kernels.gated_delta import chunk  # noqa: E402
from gdn.models import LanguageModel  # noqa: E402
from gdn.train.parallelize import ParallelSettings, compile_block, prepare_block  # noqa: E402


def gdn_block(d_model: int, heads: int, head_dim: int, device, dtype):
    torch.manual_seed(0)
    model = LanguageModel(vocab_size=64, d_model=d_model, n_layers=1, layers=["gdn"],
                          mixers={"gdn": {"num_heads": heads, "head_dim": head_dim, "backend": "triton"}})
    return model.blocks[0].to(device=device, dtype=dtype)


def mamba2_block(d_model: int, heads: int, head_dim: int, device, dtype):
    """Mamba2 with 2 d_model / 64 heads of 64 and d_state 128 (the 1.3B layer's head shape)."""
    torch.manual_seed(0)
    config = {"headdim": 64, "d_state": 128, "backend": "triton"} if d_model >= 256 else {
        "headdim": 16, "d_state": 16, "backend": "triton"}
    model = LanguageModel(vocab_size=64, d_model=d_model, n_layers=1, layers=["mamba2"], mixers={"mamba2": config})
    return model.blocks[0].to(device=device, dtype=dtype)


def mamba1_block(d_model: int, heads: int, head_dim: int, device, dtype):
    """Samba's Mamba1 layer: 2 d_model channels, d_state 16 (8 at the smoke size)."""
    torch.manual_seed(0)
    config = {"d_state": 16 if d_model >= 256 else 8, "backend": "triton"}
    model = LanguageModel(vocab_size=64, d_model=d_model, n_layers=1, layers=["mamba"], mixers={"mamba": config})
    return model.blocks[0].to(device=device, dtype=dtype)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def opchecks(device) -> None:
    def randn(*shape, scale=1.0):
        return (scale * torch.randn(*shape, device=device)).requires_grad_()

    B, T, H, K, V = 2, 100, 2, 64, 64
    k = F.normalize(torch.randn(B, T, H, K, device=device), dim=-1).requires_grad_()
    g = F.logsigmoid(torch.randn(B, T, H, device=device) + 2).requires_grad_()
    delta_args = (randn(B, T, H, K, scale=K**-0.5), k, randn(B, T, H, V), g,
                  torch.rand(B, T, H, device=device).requires_grad_(), K**-0.5, randn(B, H, K, V), True, None, True)
    cases = {
        "chunk_gated_delta_rule_fwd": (*delta_args, False),
        "chunk_gated_delta_rule_fwd (recompute_states)": (*delta_args, True),
        "short_conv_fwd": (randn(2, 50, 64), randn(64, 4, scale=0.5), randn(64), None, None, True),
        "gate_fwd": (randn(2, 50, 4), randn(4), randn(4)),
        "selective_scan_fwd": (randn(2, 100, 32), (0.1 * torch.rand(2, 100, 32, device=device)).requires_grad_(),
                               (-torch.rand(32, 16, device=device) - 0.5).requires_grad_(), randn(2, 100, 16),
                               randn(2, 100, 16), randn(32), randn(2, 32, 16), True, None, randn(32), True),
        "chunk_ssd_fwd": (randn(2, 100, 4, 16), torch.rand(2, 100, 4, device=device).requires_grad_(),
                          randn(4), randn(200, 1, 32), randn(200, 1, 32), -torch.rand(200, 4, device=device),
                          randn(2, 4, 32, 16), True, None),
        "gated_rms_norm_fwd": (randn(2, 50, 4, 64), randn(2, 50, 4, 64), randn(64), 1e-5, False),
        "gated_rms_norm_fwd (gate first)": (randn(2, 50, 4, 64), randn(2, 50, 4, 64), randn(64), 1e-5, True),
        "gated_rms_norm_fwd (no gate)": (randn(2, 50, 4, 64), None, randn(64), 1e-5, False),
    }
    for name, args in cases.items():
        torch.library.opcheck(getattr(torch.ops.gdn, name.split(" ")[0]).default, args)
        print(f"opcheck gdn::{name}: ok")


def compiled_vs_eager(make_block, block_args, x, device, backend):
    """-> (the compiled block, its output's and worst gradient's relative error against the eager block)."""
    eager = make_block(*block_args)
    expected = eager(x)
    expected.float().square().mean().backward()
    torch._dynamo.reset()
    compiled = make_block(*block_args)
    compile_block(compiled, device, backend)
    y = compiled(x)
    y.float().square().mean().backward()
    grads = dict(compiled.named_parameters())
    worst = max(relative_error(grads[n].grad, p.grad) for n, p in eager.named_parameters())
    return compiled, relative_error(y, expected), worst


def step_times(make_block, block_args, compiled, x, device, backend, repeats) -> None:
    kept_out = make_block(*block_args)
    kept_out.mixer.triton_kernels_are_torch_ops = False  # the old path: mixer under torch.compiler.disable
    compile_block(kept_out, device, backend)
    for name, block in (("eager", make_block(*block_args)), ("compiled whole", compiled),
                        ("compiled, mixer kept out", kept_out)):
        print(f"ms per fwd+bwd step, {make_block.__name__}, {name}: {step_ms(block, x, repeats):.2f}")


def graph_breaks(block, x, cu_seqlens) -> int:
    torch._dynamo.reset()
    return torch._dynamo.explain(block)(x, cu_seqlens).graph_break_count


def forward_kernel_runs(block_args, x, mode: str) -> int:
    runs, wy_forward = [], chunk.wy_forward
    chunk.wy_forward = lambda *a, **kw: (runs.append(1), wy_forward(*a, **kw))[1]
    try:
        block = prepare_block(gdn_block(*block_args), 0, ParallelSettings(activation_checkpointing=mode,
                                                                          compile=False), x.device)
        block(x).float().square().mean().backward()
    finally:
        chunk.wy_forward = wy_forward
    return len(runs)


def step_ms(block, x, repeats: int) -> float:
    def step():
        block.zero_grad(set_to_none=True)
        block(x).float().square().mean().backward()

    for _ in range(3):
        step()
    if x.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    if x.is_cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="small shapes, eager-friendly backend (smoke run)")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda and not args.tiny else torch.float32
    d_model, heads, head_dim, B, T = (32, 2, 16, 1, 40) if args.tiny else (1024, 8, 128, 4, 2048)
    backend = "aot_eager" if args.tiny else "inductor"
    repeats = 1 if args.tiny else 10
    block_args = (d_model, heads, head_dim, device, dtype)
    print(f"device {torch.cuda.get_device_name() if cuda else 'cpu'}, torch {torch.__version__}, "
          f"B x T = {B} x {T}, d_model {d_model}, {heads} heads x {head_dim}, {dtype}, compile backend {backend}")

    opchecks(device)
    x = torch.randn(B, T, d_model, device=device, dtype=dtype)
    packed = torch.tensor([0, T // 3, T], dtype=torch.int32, device=device)
    print("graph breaks, dense:", graph_breaks(gdn_block(*block_args), x, None))
    print("graph breaks, packed:", graph_breaks(gdn_block(*block_args), x[:1], packed))

    compiled, out_err, grad_err = compiled_vs_eager(gdn_block, block_args, x, device, backend)
    print(f"compiled vs eager: output rel err {out_err:.2e}, worst grad rel err {grad_err:.2e}")

    for mode in ("none", "op", "full"):
        print(f"delta rule forward kernel runs per step, activation_checkpointing={mode}:",
              forward_kernel_runs(block_args, x, mode))
    step_times(gdn_block, block_args, compiled, x, device, backend, repeats)

    for make_block in (mamba2_block, mamba1_block):
        name = make_block.__name__
        print(f"{name} graph breaks, dense:", graph_breaks(make_block(*block_args), x, None))
        print(f"{name} graph breaks, packed:", graph_breaks(make_block(*block_args), x[:1], packed))
        compiled, out_err, grad_err = compiled_vs_eager(make_block, block_args, x, device, backend)
        print(f"{name} compiled vs eager: output rel err {out_err:.2e}, worst grad rel err {grad_err:.2e}")
        step_times(make_block, block_args, compiled, x, device, backend, repeats)


if __name__ == "__main__":
    sys.exit(main())
