"""How many warps should each chunk kernel of the gated delta rule launch with? Times the whole op (fwd and
fwd+bwd, l2norm inside) with one kernel's launch changed at a time, and checks each variant against float64.

    PYTHONPATH=src python benchmarks/warps_probe.py          # on the GPU, ~2 min
    GDN_WARPS=all=8 PYTHONPATH=src:benchmarks python -m pytest -p warps_probe -m gpu tests/kernels/...

As a pytest plugin (the second line) it launches the kernels named in $GDN_WARPS (`wy_forward=8,wy_backward=8`, or
`all=8`) with those warps for the whole session: the GPU tests of a variant before it is written into the source.

At 4 warps each of the 128 threads holds 32 elements of every 64 x 64 fp32 tile, at 8 warps 16: whether the register
pressure or the extra warps cost more is the card's to say, and this script asks it. (Spill figures once quoted here
were compiled without the JIT's pointer alignment and came out 2-5x too high: BENCHMARKS.md, "Warps of the gated
delta rule's chunk kernels".) The variants change `num_warps` in the launch (the kernel object's `run`), not the
source, so the rows time exactly the code of this tree. The state kernels are left out: they autotune 4 against 8
warps already.
"""
from __future__ import annotations

import contextlib
import os

import torch
import triton

from bench_gated_delta import SHAPES, check_against_float64, make_inputs, measure, ours
from gdn.kernels.gated_delta import _output, _wy

KERNELS = {  # name: (module, kernel attribute, warps it launches with now)
    "wy_forward": (_wy, "wy_forward_kernel", 4),
    "output_forward": (_output, "output_forward_kernel", 4),
    "output_backward_dv": (_output, "output_backward_dv_kernel", 4),
    "output_backward_qkw": (_output, "output_backward_qkw_kernel", 8),
    "wy_backward": (_wy, "wy_backward_kernel", 4),
}


@contextlib.contextmanager
def launched_with(warps: dict[str, int]):
    """Within the block, the named kernels launch with the given num_warps."""
    kernels = {name: getattr(KERNELS[name][0], KERNELS[name][1]) for name in warps}
    for name, kernel in kernels.items():
        run = kernel.run
        kernel.run = lambda *args, _run=run, _warps=warps[name], **kwargs: _run(*args, **{**kwargs,
                                                                                          "num_warps": _warps})
    try:
        yield
    finally:
        for kernel in kernels.values():
            del kernel.run  # the class's run again


def pytest_configure(config):
    warps = {}
    for item in filter(None, os.environ.get("GDN_WARPS", "").split(",")):
        name, value = item.split("=")
        warps.update({n: int(value) for n in (KERNELS if name == "all" else [name])})
    context = launched_with(warps)
    context.__enter__()
    config.add_cleanup(lambda: context.__exit__(None, None, None))
    print(f"warps_probe: kernels launched with {warps}")


def variants():
    yield "as is", {}
    for name, (_, _, now) in KERNELS.items():
        yield f"{name} {12 - now} warps", {name: 12 - now}  # 4 <-> 8
    yield "all at 8 warps", {name: 8 for name in KERNELS}


def main():
    props = torch.cuda.get_device_properties(0)
    print(f"card: {props.name}, torch {torch.__version__}, triton {triton.__version__}")
    inputs = [make_inputs(*shape) for shape in SHAPES]
    header = " | ".join(f"{B}x{T}, {H}, {K}/{V} fwd / fwd+bwd ms" for B, T, H, K, V in SHAPES)
    rows = []
    for label, warps in variants():
        with launched_with(warps):
            print(f"# {label}", flush=True)
            check_against_float64(2, 1000, 4, 128, 128)
            check_against_float64(1, 1000, 2, 256, 512)
            check_against_float64(1, 3000, 4, 128, 128, cu_seqlens=[0, 700, 1600, 1601, 3000])
            times = [measure(ours, x)[:2] for x in inputs]
        rows.append((label, times))
    base = rows[0][1]
    print(f"\n| variant | {header} | fwd+bwd / as is |")
    print("|---|" + "---|" * (len(SHAPES) + 1))
    for label, times in rows:
        cells = " | ".join(f"{f:.3f} / {a:.3f}" for f, a in times)
        ratio = " ".join(f"{a / b[1]:.3f}" for (_, a), b in zip(times, base))
        print(f"| {label} | {cells} | {ratio} |")


if __name__ == "__main__":
    main()
