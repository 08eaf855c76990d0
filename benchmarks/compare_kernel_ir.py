"""Do the chunk kernels compile to the same Hopper code as at another commit? No GPU needed.

    python benchmarks/compare_kernel_ir.py --base 8ac74fc

Compiles the gated-delta family's chunk kernels (state pass forward/backward, output forward and its two backward
kernels) for sm_90 with this checkout's Triton, from this tree and from `git show BASE:<file>`, at three head
shapes, and compares the TTGIR (locations removed) and the PTX instructions (debug lines and comments removed).
For a refactor that should change nothing on the GPU (e.g. a new constexpr whose default path is the old code),
"identical" here is strong evidence; the GPU tests remain the proof. Arguments new since BASE are given the value
that reproduces the old behaviour (--same KEY=EXPR, EXPR over the constexprs, e.g. QK_H=H).
"""
from __future__ import annotations

import argparse
import importlib.util
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
FILES = {"state": "src/gdn/kernels/gated_delta/_state.py", "output": "src/gdn/kernels/gated_delta/_output.py"}
TARGET = GPUTarget("cuda", 90, 32)
SHAPES = [(16, 128, 128), (6, 256, 512), (4, 32, 32)]  # H, K, V


def load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def jit_function(kernel):
    while not isinstance(kernel, triton.runtime.jit.JITFunction):
        kernel = kernel.fn  # through the autotuner
    return kernel


def compiled(kernel, pointers: dict, constexprs: dict, num_warps: int) -> tuple[str, list[str]]:
    fn = jit_function(kernel)
    names = [n for n in fn.arg_names]
    signature = {n: pointers.get(n, "constexpr") for n in names}
    consts = {n: v for n, v in constexprs.items() if n in names}
    k = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=consts), target=TARGET,
                       options={"num_warps": num_warps, "num_stages": 2})
    ttgir = re.sub(r"loc\(.*?\)|#loc\d*|loc\d+", "", k.asm["ttgir"])
    instructions, in_debug = [], False
    for line in k.asm["ptx"].splitlines():
        text = line.strip()
        in_debug = in_debug or text.startswith(".section")
        if not in_debug and text and not text.startswith((".loc", "//", ".file", "$L__")):
            instructions.append(text.split("//")[0].strip())
    return ttgir, instructions


def kernels(H, K, V, has_w):
    """(name, module key, kernel attribute, pointer types, constexprs, warps)."""
    common = {"H": H, "K": K, "V": V, "BT": 64, "PRECISION": "tf32", "HAS_W": has_w}
    ptr = lambda names, kinds: dict(zip(names, kinds))  # noqa: E731
    state_fwd = ptr(["k_ptr", "w_ptr", "u_ptr", "gc_ptr", "h0_ptr", "h_ptr", "v_new_ptr", "ht_ptr", "cu_seqlens_ptr",
                     "chunk_offsets_ptr"], ["*bf16"] * 3 + ["*fp32"] * 2 + ["*bf16"] * 2 + ["*fp32"] + ["*i32"] * 2)
    state_bwd = ptr(["q_ptr", "k_ptr", "w_ptr", "gc_ptr", "do_ptr", "dv_intra_ptr", "dht_ptr", "dh_ptr",
                     "dv_new_ptr", "dh0_ptr", "cu_seqlens_ptr", "chunk_offsets_ptr", "scale"],
                    ["*bf16"] * 3 + ["*fp32"] + ["*bf16"] * 2 + ["*fp32"] + ["*bf16"] * 2 + ["*fp32"] + ["*i32"] * 2
                    + ["fp32"])
    out_fwd = ptr(["q_ptr", "k_ptr", "v_new_ptr", "h_ptr", "gc_ptr", "o_ptr", "cu_seqlens_ptr", "chunk_index_ptr",
                   "scale"], ["*bf16"] * 4 + ["*fp32", "*bf16", "*i32", "*i32", "fp32"])
    out_dv = ptr(["q_ptr", "k_ptr", "gc_ptr", "do_ptr", "dv_ptr", "cu_seqlens_ptr", "chunk_index_ptr", "scale"],
                 ["*bf16"] * 2 + ["*fp32"] + ["*bf16"] * 2 + ["*i32"] * 2 + ["fp32"])
    out_qkw = ptr(["q_ptr", "k_ptr", "v_new_ptr", "h_ptr", "dh_ptr", "gc_ptr", "do_ptr", "dv_new_ptr", "dq_ptr",
                   "dk_ptr", "dw_ptr", "dgc_ptr", "cu_seqlens_ptr", "chunk_index_ptr", "scale", "T"],
                  ["*bf16"] * 5 + ["*fp32"] + ["*bf16"] * 3
                  + ["*fp32", "*bf16", "*fp32", "*i32", "*i32", "fp32", "i32"])
    state = dict(common, BK=max(K, 64), BV=64, HAS_H0=True, STORE_FINAL=True, HAS_DHT=True, STORE_DH0=True)
    output = dict(common, BK=64, BV=min(max(V, 64), 128))
    yield "state_forward", "state", "state_forward_kernel", state_fwd, state, 4
    yield "state_backward", "state", "state_backward_kernel", state_bwd, state, 4
    yield "output_backward_qkw", "output", "output_backward_qkw_kernel", out_qkw, dict(output, BK=min(max(K, 64), 128),
                                                                                       BV=64), 8
    if has_w:  # these two have no W switch
        yield "output_forward", "output", "output_forward_kernel", out_fwd, output, 4
        yield "output_backward_dv", "output", "output_backward_dv_kernel", out_dv, output, 4


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="the commit to compare with")
    parser.add_argument("--same", action="append", default=["QK_H=H"],
                        help="a constexpr new since BASE and the expression that gives the old behaviour")
    args = parser.parse_args(argv)
    new = {key: load(ROOT / path, f"new_{key}") for key, path in FILES.items()}
    old = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key, path in FILES.items():
            text = subprocess.run(["git", "-C", str(ROOT), "show", f"{args.base}:{path}"], check=True,
                                  capture_output=True, text=True).stdout
            (Path(tmp) / f"old_{key}.py").write_text(text)
            old[key] = load(Path(tmp) / f"old_{key}.py", f"old_{key}")
    differing = 0
    for H, K, V in SHAPES:
        for has_w in (True, False):
            for name, key, attr, pointers, consts, warps in kernels(H, K, V, has_w):
                extra = {k: eval(expr, {}, consts) for k, expr in (s.split("=") for s in args.same)}
                # both sides get the --same values: compiled() passes each kernel only the arguments it has
                base = compiled(getattr(old[key], attr), pointers, {**consts, **extra}, warps)
                here = compiled(getattr(new[key], attr), pointers, {**consts, **extra}, warps)
                same = [base[0] == here[0], base[1] == here[1]]
                differing += not all(same)
                print(f"{name:20s} H={H} K={K} V={V} W={has_w!s:5s}: TTGIR {'same' if same[0] else 'DIFFERENT'}, "
                      f"PTX instructions {'same' if same[1] else 'DIFFERENT'} ({len(here[1])} lines)", flush=True)
    print("all identical" if not differing else f"{differing} kernels differ")
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main())
