"""Compile the selective-scan kernels for a GPU target on any machine (no GPU needed) and print their resources.

    PYTHONPATH=src python benchmarks/compile_selective_scan.py [--arch 90] [--channels 4608] [--d-state 16]

Uses Triton's own compiler and the ptxas/cuobjdump it ships: shows that every autotuning config lowers (3-D
associative scans included) and how many registers a thread takes and how many bytes it spills (STACK) per
num_warps. This is how the 16-token tile was chosen; it says nothing about speed.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import tempfile

if os.environ.get("TRITON_INTERPRET") == "1":
    raise SystemExit("unset TRITON_INTERPRET: the interpreter does not compile")

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from gdn.kernels.selective_scan import chunk, recurrent  # noqa: E402
from gdn.kernels.selective_scan._common import TILE, state_block  # noqa: E402

F32, BF16, I32 = "*fp32", "*bf16", "*i32"
# as the Mamba1 layer calls them under bf16 autocast: bf16 activations and raw dt, fp32 parameters and states
FORWARD = dict(x_ptr=BF16, dt_ptr=BF16, A_ptr=F32, B_ptr=BF16, C_ptr=BF16, D_ptr=F32, dt_bias_ptr=F32, h0_ptr=F32,
               y_ptr=BF16, final_ptr=F32, checkpoint_ptr=F32, cu_seqlens_ptr=I32, tile_offsets_ptr=I32)
BACKWARD = dict(x_ptr=BF16, dt_ptr=BF16, A_ptr=F32, B_ptr=BF16, C_ptr=BF16, D_ptr=F32, dt_bias_ptr=F32, dy_ptr=BF16,
                checkpoint_ptr=F32, dfinal_ptr=F32, dx_ptr=BF16, ddt_ptr=BF16, dB_part_ptr=F32, dC_part_ptr=F32,
                dA_part_ptr=F32, dD_part_ptr=F32, dbias_part_ptr=F32, dh0_ptr=F32, cu_seqlens_ptr=I32,
                tile_offsets_ptr=I32, num_tokens="i32")
STEP = dict(x_ptr=BF16, dt_ptr=BF16, A_ptr=F32, B_ptr=BF16, C_ptr=BF16, D_ptr=F32, dt_bias_ptr=F32, h0_ptr=F32,
            y_ptr=BF16, final_ptr=F32, cu_seqlens_ptr=I32)


def jit_function(kernel):
    while not isinstance(kernel, triton.runtime.jit.JITFunction):
        kernel = kernel.fn  # through the autotuner
    return kernel


def resources(kernel, arguments: dict, constants: dict, num_warps: int, target: GPUTarget) -> str:
    fn = jit_function(kernel)
    signature = {name: "constexpr" if name in constants else arguments[name] for name in fn.arg_names}
    constexprs = {(fn.arg_names.index(name),): value for name, value in constants.items()}
    compiled = triton.compile(ASTSource(fn, signature, constexprs), target=target, options={"num_warps": num_warps})
    with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
        cubin.write(compiled.asm["cubin"])
        cubin.flush()
        tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
        usage = subprocess.run([tool, "-res-usage", cubin.name], capture_output=True, text=True, check=True).stdout
    fields = dict(item.split(":") for line in usage.splitlines() if "REG:" in line for item in line.split())
    return f"{fields['REG']} registers, {fields['STACK']} B stack (spills), {compiled.metadata.shared} B shared memory"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="compute capability, 90 = H100/H200")
    parser.add_argument("--channels", type=int, default=4608)
    parser.add_argument("--d-state", type=int, default=16)
    args = parser.parse_args()
    target = GPUTarget("cuda", args.arch, 32)
    BN, BD = state_block(args.d_state)
    shape = dict(D_CH=args.channels, N=args.d_state, BN=BN, BD=BD, HAS_D=True, HAS_DT_BIAS=True, DT_SOFTPLUS=True)
    kernels = [
        ("forward", chunk.scan_forward_kernel, FORWARD,
         dict(shape, BT=TILE, HAS_H0=True, STORE_FINAL=True, STORE_CHECKPOINTS=True)),
        ("backward", chunk.scan_backward_kernel, BACKWARD,
         dict(shape, BT=TILE, HAS_DFINAL=True, STORE_DH0=True)),
    ]
    print(f"triton {triton.__version__}, sm_{args.arch}, tile {TILE} tokens x {BD} channels x {BN} states")
    for name, kernel, arguments, constants in kernels:
        for config in kernel.configs:
            print(f"{name:9s} num_warps {config.num_warps:2d}: "
                  f"{resources(kernel, arguments, constants, config.num_warps, target)}", flush=True)
    step_constants = dict(shape, HAS_H0=True, STORE_FINAL=True)
    print(f"decode    num_warps  4: {resources(recurrent.scan_step_kernel, STEP, step_constants, 4, target)}")


if __name__ == "__main__":
    main()
