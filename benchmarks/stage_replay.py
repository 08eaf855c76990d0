"""Where does a GPU result of the gated delta rule part from the interpreter's? Run every stage of the chunked
forward and backward on the GPU, save each stage's inputs and outputs (--dump FILE), then on a CPU run each stage
again under TRITON_INTERPRET=1 on the GPU's own inputs (--replay FILE): a stage whose outputs differ by more than
rounding is where the GPU code computes something else (a miscompile, a GPU-only tile) and no test on the CPU
can see it.

    python3 benchmarks/stage_replay.py --dump $OUT/stages.pt            # on the GPU
    TRITON_INTERPRET=1 python benchmarks/stage_replay.py --replay stages.pt   # here

Inputs as the issue's failing case draws them (FLA's distribution): q, k, v ~ U(0, 1), k L2-normalised,
g = logsigmoid(U(0, 1)), beta = sigmoid(U(0, 1)), scale 0.1, h0 ~ N(0, 1); bf16.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F

STAGES = ("wy_forward", "state_forward", "output_forward", "output_backward_dv", "state_backward",
          "output_backward_qkw", "wy_backward")


def make_inputs(B, T, H, K, V, dtype, device, seed=0):
    gen = torch.Generator(device).manual_seed(seed)
    rand = lambda *shape: torch.rand(*shape, generator=gen, device=device)  # noqa: E731
    return dict(
        q=rand(B * T, H, K).to(dtype), k=F.normalize(rand(B * T, H, K), dim=-1).to(dtype),
        v=rand(B * T, H, V).to(dtype), g=F.logsigmoid(rand(B * T, H)), beta=torch.sigmoid(rand(B * T, H)).to(dtype),
        h0=torch.randn(B, H, K, V, generator=gen, device=device), do=torch.randn(B * T, H, V, generator=gen,
                                                                                   device=device).to(dtype),
    )


def run_stages(x, B, T, scale, calls=None):
    """Every stage on x's tensors; with calls (a dict of recorded stage inputs) each stage takes its recorded
    inputs instead of the previous stage's outputs. -> {stage: (inputs, outputs)}."""
    from gdn.kernels.gated_delta._common import chunk_layout
    from gdn.kernels.gated_delta import _output, _state, _wy

    layout = chunk_layout(B, T, None, x["q"].device)
    record = {}

    def call(name, fn, *args):
        args = calls[name] if calls is not None else args
        out = fn(*args, layout) if name not in ("output_forward", "output_backward_dv", "state_backward",
                                                 "output_backward_qkw") else fn(*args, layout=layout)
        record[name] = (args, out if isinstance(out, tuple) else (out,))
        return out

    q, k, v, g, beta, h0, do = (x[n] for n in ("q", "k", "v", "g", "beta", "h0", "do"))
    gc, t, w, u = call("wy_forward", _wy.wy_forward, k, v, g, beta)
    h, v_new, final = call("state_forward", _state.state_forward, k, w, u, gc, h0, True)
    call("output_forward", _output.output_forward, q, k, v_new, h, gc, scale)
    dv_intra = call("output_backward_dv", _output.output_backward_dv, q, k, gc, do, scale)
    dh, dv_new, dh0 = call("state_backward", _state.state_backward, q, k, w, gc, do, dv_intra, None, scale, True)
    dq, dk, dw, dgc = call("output_backward_qkw", _output.output_backward_qkw, q, k, v_new, h, dh, gc, do, dv_new,
                           scale, True)
    call("wy_backward", _wy.wy_backward, k, v, beta, gc, t, dw, dv_new, dk, dgc)
    return record


def to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, (tuple, list)):
        return type(obj)(to_cpu(o) for o in obj)
    return obj


def relative(a, b):
    if not isinstance(a, torch.Tensor):
        return None
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dump")
    parser.add_argument("--replay")
    parser.add_argument("--shape", default="1,1024,2,128,128", help="B,T,H,K,V")
    args = parser.parse_args()
    B, T, H, K, V = (int(s) for s in args.shape.split(","))
    if args.dump:
        x = make_inputs(B, T, H, K, V, torch.bfloat16, "cuda" if torch.cuda.is_available() else "cpu")
        record = run_stages(x, B, T, 0.1)
        torch.save(dict(shape=(B, T, H, K, V), record=to_cpu(record)), args.dump)
        print(f"saved {len(record)} stages to {args.dump}")
        return
    if not os.environ.get("TRITON_INTERPRET"):
        sys.exit("--replay runs the stages under TRITON_INTERPRET=1 on the CPU")
    saved = torch.load(args.replay, map_location="cpu")
    B, T, H, K, V = saved["shape"]
    calls = {name: args_ for name, (args_, _) in saved["record"].items()}
    replayed = run_stages({n: None for n in ("q", "k", "v", "g", "beta", "h0", "do")} | {"q": torch.empty(0)},
                          B, T, 0.1, calls)
    for name in STAGES:
        gpu_out = saved["record"][name][1]
        cpu_out = replayed[name][1]
        errors = [relative(a, b) for a, b in zip(gpu_out, cpu_out)]
        print(f"{name:20s} " + "  ".join("-" if e is None else f"{e:.1e}" for e in errors))


if __name__ == "__main__":
    main()
