"""Gated delta rule speed on one GPU: our Triton kernels vs FLA 0.6.0 vs SDPA causal attention.

    PYTHONPATH=src python benchmarks/bench_gated_delta.py [--breakdown]

bf16 q/k/v/beta, fp32 log decay g, q/k L2-normalised inside the kernel (FLA: use_qk_l2norm_in_kernel=True), no
states. Times are CUDA-event medians (triton.testing.do_bench) after warm-up; peak memory is the allocator's
peak during one fwd+bwd above what the inputs hold. FLA is optional: without it its columns read "-".
--breakdown also times each of our stages; --anchors none times ours alone (for a second run of an older commit's
src/ beside this one: gpu_check.sh bench-vs); --check first compares our o, final state and every gradient with
the float64 PyTorch chunked computation at small batches of the same head sizes (the same compiled kernels).
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
import triton

from gdn.kernels import chunk_gated_delta_rule, chunk_gated_delta_rule_torch

SHAPES = [(8, 4096, 16, 128, 128), (2, 16384, 16, 128, 128), (4, 4096, 6, 256, 512)]  # B, T, H, K, V


def load_fla():
    try:
        import fla.ops.common.chunk_o as fla_chunk_o
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule as fla_chunk_gated_delta_rule
    except ImportError as err:
        print(f"note: FLA not importable ({err}); its columns are left empty")
        return None
    # FLA refuses its gated backward kernel on Hopper with Triton 3.4-3.7.0 (FLA issue 640: miscompiled there);
    # lift the guard to time it. Its gradients on this toolchain are not trusted, only its speed is measured.
    fla_chunk_o.TRITON_ABOVE_3_7_1 = True
    return lambda q, k, v, g, beta: fla_chunk_gated_delta_rule(q, k, v, g, beta, use_qk_l2norm_in_kernel=True)


def ours(q, k, v, g, beta):
    return chunk_gated_delta_rule(q, k, v, g, beta, use_qk_l2norm=True)


def sdpa(q, k, v, g, beta):
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)


def make_inputs(B, T, H, K, V, seed=0):
    gen = torch.Generator("cuda").manual_seed(seed)
    randn = lambda *shape: torch.randn(*shape, generator=gen, device="cuda")  # noqa: E731
    q, k, v = randn(B, T, H, K).bfloat16(), randn(B, T, H, K).bfloat16(), randn(B, T, H, V).bfloat16()
    g = F.logsigmoid(randn(B, T, H) + 3.0)
    beta = torch.sigmoid(randn(B, T, H)).bfloat16()
    return [x.requires_grad_() for x in (q, k, v, g, beta)]


def measure(fn, inputs):
    """(fwd ms, fwd+bwd ms, peak extra GiB during fwd+bwd)."""
    out = fn(*inputs)
    out = out[0] if isinstance(out, tuple) else out
    do = torch.randn_like(out)
    with torch.no_grad():
        fwd = triton.testing.do_bench(lambda: fn(*inputs), warmup=50, rep=300, return_mode="median")

    def step():
        o = fn(*inputs)
        (o[0] if isinstance(o, tuple) else o).backward(do)

    fwd_bwd = triton.testing.do_bench(step, warmup=50, rep=300, grad_to_none=inputs, return_mode="median")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    return fwd, fwd_bwd, (torch.cuda.max_memory_allocated() - base) / 2**30


def check_against_float64(B, T, H, K, V, cu_seqlens=None, seed=1):
    """Relative errors of our bf16 kernels (with states, l2norm) against the float64 chunked computation."""
    inputs = make_inputs(B, T, H, K, V, seed=seed)
    n = B if cu_seqlens is None else len(cu_seqlens) - 1
    gen = torch.Generator("cuda").manual_seed(seed + 1000)
    shapes = ((n, H, K, V), (B, T, H, V), (n, H, K, V))
    h0, do, dht = (torch.randn(*shape, generator=gen, device="cuda") for shape in shapes)
    inputs.append(h0.requires_grad_())
    cu = None if cu_seqlens is None else torch.tensor(cu_seqlens, dtype=torch.int32, device="cuda")
    results = []
    for fn, args in ((chunk_gated_delta_rule, inputs), (chunk_gated_delta_rule_torch,
                                                        [x.detach().double().requires_grad_() for x in inputs])):
        o, ht = fn(*args[:5], initial_state=args[5], output_final_state=True, cu_seqlens=cu, use_qk_l2norm=True)
        ((o.double() * do.double()).sum() + (ht.double() * dht.double()).sum()).backward()
        results.append([o, ht] + [x.grad for x in args])
    names = ["o", "final_state", "dq", "dk", "dv", "dg", "dbeta", "dh0"]
    errors = {name: ((a.double() - b).norm() / b.norm()).item() for name, a, b in zip(names, *results)}
    label = f"{B}x{T}x{H}x{K}/{V}" + (" varlen" if cu_seqlens else "")
    print(f"check vs float64 {label}: " + ", ".join(f"{name} {err:.2e}" for name, err in errors.items()))


def breakdown(B, T, H, K, V):
    """Time every stage of our forward and backward on the inputs of one shape."""
    from gdn.kernels.gated_delta import _l2norm, _output, _state, _wy
    from gdn.kernels.gated_delta._common import chunk_layout

    q, k, v, g, beta = (x.detach().reshape(B * T, H, -1).squeeze(-1) for x in make_inputs(B, T, H, K, V))
    layout = chunk_layout(B, T, None, q.device)
    scale = K**-0.5
    q, q_rstd = _l2norm.l2norm_forward(q)
    k, k_rstd = _l2norm.l2norm_forward(k)
    gc, t, w, u = _wy.wy_forward(k, v, g, beta, layout)
    h, v_new, _ = _state.state_forward(k, w, u, gc, None, False, layout)
    do = torch.randn_like(v)
    dv_intra = _output.output_backward_dv(q, k, gc, do, scale, layout)
    dh, dv_new, _ = _state.state_backward(q, k, w, gc, do, dv_intra, None, scale, False, layout)
    dq, dk, dw, dgc = _output.output_backward_qkw(q, k, v_new, h, dh, gc, do, dv_new, scale, True, layout)
    stages = {
        "l2norm fwd (q and k)": lambda: (_l2norm.l2norm_forward(q), _l2norm.l2norm_forward(k)),
        "wy_forward": lambda: _wy.wy_forward(k, v, g, beta, layout),
        "state_forward": lambda: _state.state_forward(k, w, u, gc, None, False, layout),
        "output_forward": lambda: _output.output_forward(q, k, v_new, h, gc, scale, layout),
        "output_backward_dv": lambda: _output.output_backward_dv(q, k, gc, do, scale, layout),
        "state_backward": lambda: _state.state_backward(q, k, w, gc, do, dv_intra, None, scale, False, layout),
        "output_backward_qkw": lambda: _output.output_backward_qkw(q, k, v_new, h, dh, gc, do, dv_new, scale,
                                                                   True, layout),
        "wy_backward": lambda: _wy.wy_backward(k, v, beta, gc, t, dw, dv_new, dk, dgc, layout),
        "l2norm bwd (q and k)": lambda: (_l2norm.l2norm_backward(q, q_rstd, dq, q.dtype),
                                         _l2norm.l2norm_backward(k, k_rstd, dk, k.dtype)),
    }
    print(f"\nstage breakdown at {B}x{T}, H={H}, K={K}, V={V} (ms, median)")
    for name, fn in stages.items():
        print(f"  {name:24s} {triton.testing.do_bench(fn, warmup=25, rep=100, return_mode='median'):.3f}")


def cell(times, i):
    return f"{times[i]:.2f}" if times else "-"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--breakdown", action="store_true", help="also time each of our stages")
    parser.add_argument("--check", action="store_true", help="first check our results against float64")
    parser.add_argument("--anchors", choices=("fla,sdpa", "none"), default="fla,sdpa",
                        help="time FLA and SDPA beside ours (default) or ours alone")
    args = parser.parse_args()
    anchors = args.anchors != "none"
    fla = load_fla() if anchors else None
    props = torch.cuda.get_device_properties(0)
    import gdn
    print(f"card: {props.name}, torch {torch.__version__}, triton {triton.__version__}, gdn from {gdn.__file__}")
    if args.check:
        check_against_float64(2, 1000, 4, 128, 128)
        check_against_float64(1, 1000, 2, 256, 512)
        check_against_float64(1, 3000, 4, 128, 128, cu_seqlens=[0, 700, 1600, 1601, 3000])
    print("\n| B x T, H, K/V | ours fwd ms | ours fwd+bwd ms | FLA fwd ms | FLA fwd+bwd ms | FLA/ours fwd | "
          "FLA/ours fwd+bwd | SDPA fwd ms | SDPA fwd+bwd ms | peak GiB ours / FLA / SDPA |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for B, T, H, K, V in SHAPES:
        inputs = make_inputs(B, T, H, K, V)
        o = measure(ours, inputs)
        f = measure(fla, inputs) if fla else None
        s = measure(sdpa, inputs) if anchors and K == V else None
        ratio_fwd, ratio_all = (f"{f[0] / o[0]:.2f}", f"{f[1] / o[1]:.2f}") if f else ("-", "-")
        print(f"| {B} x {T}, {H}, {K}/{V} | {o[0]:.2f} | {o[1]:.2f} | {cell(f, 0)} | {cell(f, 1)} | {ratio_fwd} | "
              f"{ratio_all} | {cell(s, 0)} | {cell(s, 1)} | {o[2]:.2f} / {cell(f, 2)} / {cell(s, 2)} |")
        torch.cuda.empty_cache()
    if args.breakdown:
        breakdown(*SHAPES[0])
        breakdown(*SHAPES[2])


if __name__ == "__main__":
    main()
