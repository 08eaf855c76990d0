"""Which part of the WY backward kernel computes something else on the GPU? (stage_replay.py found it: dbeta and
dg of wy_backward differ from the interpreter's by 1e-2 on the same inputs, every other stage to rounding.)
Runs variants of _wy.py's kernel, rewritten as text into temporary modules, on FLA's input distribution against a
float64 PyTorch wy_backward of the same inputs, and prints each variant's errors.

    python3 benchmarks/wy_backward_probe.py [VARIANT ...]   # on the GPU: errors of every (or each named) variant
    python3 benchmarks/wy_backward_probe.py --time          # on the GPU: ms of the TIMED variants
"""
from __future__ import annotations

import importlib.util
import pathlib
import sys
import tempfile

import torch

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from stage_replay import make_inputs, run_stages  # noqa: E402

D_T_K = "d_t += tl.dot(dwb.to(tl.float32), tl.trans(kb * k_scale[:, None]), input_precision=PRECISION)"
D_T_V = "d_t += tl.dot(dub.to(tl.float32), tl.trans(vb * beta[:, None]), input_precision=PRECISION)"
D_A = "d_a = -tl.dot(tl.dot(t_t, d_t, input_precision=PRECISION), t_t, input_precision=PRECISION)"
BK_CAP = ("def _tiles(K: int, V: int) -> tuple[int, int]:\n    return tile_width(K, 64), tile_width(V, 64)")
LAUNCH_WARPS = "PRECISION=dot_precision(k.dtype), num_warps=4,\n    )\n    return dk, dv, dbeta, dg"
KK_OWN_LOOP = ("    for k0 in range(0, K, BK):  # apart from the loop above: together they miscompile on Hopper "
               "(module doc)\n        ck = k0 + tl.arange(0, BK)\n        kb = tl.load(k_ptr + (rows[:, None] * H + "
               "i_h) * K + ck[None, :], mask=valid[:, None] & (ck < K), other=0.0)\n")
KK_IN_THE_D_T_LOOP = [(KK_OWN_LOOP, "")]  # the kernel before the fix
D_A_DECAY = "    d_a = d_a * decay_matrix(gc, valid, True, BT)  # now dL/d(beta_i k_i.k_j), i > j\n"
D_GC = "tl.sum(d_log_a, 1) - tl.sum(d_log_a, 0)\n"
# Intermediates to a debug buffer [chunks, H, 4, 64, 64]: d_t, d_a (after the decay), kk, and (slot 3) the row
# dgc after the A path and the row dbeta before the K loop; wy_backward keeps the buffer in LAST_DEBUG.
DUMP = [
    ("    dk_ptr, dv_ptr, dbeta_ptr, dg_ptr,  # out", "    dk_ptr, dv_ptr, dbeta_ptr, dg_ptr, dbg_ptr,  # out"),
    ("dk, dv, dbeta, dg, layout.cu_seqlens", "dk, dv, dbeta, dg, dbg, layout.cu_seqlens"),
    ("    BK, BV = _tiles(K, V)\n    wy_backward_kernel",
     "    BK, BV = _tiles(K, V)\n    global LAST_DEBUG\n"
     "    dbg = LAST_DEBUG = torch.full((layout.num_chunks, H, 4, CHUNK, CHUNK), float('nan'), device=k.device)\n"
     "    wy_backward_kernel"),
    (D_A_DECAY, D_A_DECAY + "    dbg = dbg_ptr + (i_c * H + i_h) * 4 * BT * BT + rt[:, None] * BT + rt[None, :]\n"
     "    tl.store(dbg, d_t)\n    tl.store(dbg + BT * BT, d_a)\n    tl.store(dbg + 2 * BT * BT, kk)\n"),
    (D_GC, D_GC + "    tl.store(dbg_ptr + (i_c * H + i_h) * 4 * BT * BT + 3 * BT * BT + rt, dgc)\n"
     "    tl.store(dbg_ptr + (i_c * H + i_h) * 4 * BT * BT + 3 * BT * BT + BT + rt, dbeta)\n"),
]
IEEE_D_T = [(line, line.replace("input_precision=PRECISION", "input_precision='ieee'")) for line in (D_T_K, D_T_V)]
IEEE_D_A = [(D_A, D_A.replace("input_precision=PRECISION", "input_precision='ieee'"))]


def warps(n):
    return [(LAUNCH_WARPS, LAUNCH_WARPS.replace("num_warps=4", f"num_warps={n}"))]


VARIANTS = {  # name: [(old, new) text replacements in _wy.py]
    "as is": [],
    "kk in the d_t loop (before)": KK_IN_THE_D_T_LOOP,
    "kk in the d_t loop, 2 warps": KK_IN_THE_D_T_LOOP + warps(2),
    "kk in the d_t loop, 8 warps": KK_IN_THE_D_T_LOOP + warps(8),
    "kk in the d_t loop, BK 128": KK_IN_THE_D_T_LOOP + [(BK_CAP, BK_CAP.replace("tile_width(K, 64)",
                                                                                 "tile_width(K, 128)"))],
    "kk in the d_t loop, ieee": KK_IN_THE_D_T_LOOP + IEEE_D_T + IEEE_D_A,
    "8 warps": warps(8),
    "dump": DUMP,
    "dump, kk in the d_t loop": DUMP + KK_IN_THE_D_T_LOOP,
}
TIMED = ("as is", "kk in the d_t loop (before)", "kk in the d_t loop, 2 warps", "kk in the d_t loop, BK 128")
TIMED_SHAPES = [(8, 4096, 16, 128, 128), (4, 4096, 6, 256, 512)]


def load_variant(name, replacements, folder):
    import gdn.kernels.gated_delta._wy as wy

    source = pathlib.Path(wy.__file__).read_text()
    for old, new in replacements:
        if old not in source:
            raise SystemExit(f"variant {name!r}: text not found: {old[:60]!r}")
        source = source.replace(old, new)
    path = pathlib.Path(folder) / f"wy_variant_{abs(hash(name))}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def wy_backward_float64(k, v, beta, gc, t, dw, du, dk_other, dgc_other):
    C = 64
    total, H, K = k.shape
    n = total // C
    chunks = lambda x: x.double().reshape(n, C, H, *x.shape[2:]).transpose(1, 2)  # noqa: E731  [n, H, C, ...]
    k, v, dw, du, dk_other, t = (chunks(x) for x in (k, v, dw, du, dk_other, t))
    beta, gc, dgc_other = (chunks(x) for x in (beta, gc, dgc_other))
    ks = beta * gc.exp()
    tt = t.transpose(-1, -2)
    d_t = dw @ (k * ks[..., None]).transpose(-1, -2) + du @ (v * beta[..., None]).transpose(-1, -2)
    t_du = tt @ du
    dv = beta[..., None] * t_du
    dbeta = (v * t_du).sum(-1)
    lower = torch.ones(C, C, dtype=torch.bool, device=k.device).tril(-1)
    decay = (gc[..., :, None] - gc[..., None, :]).masked_fill(~lower, float("-inf")).exp()
    d_a = -(tt @ d_t @ tt) * decay
    kk = k @ k.transpose(-1, -2)
    dbeta = dbeta + (d_a * kk).sum(-1)
    d_log = d_a * kk * beta[..., :, None]
    dgc = dgc_other + d_log.sum(-1) - d_log.sum(-2)
    inner = dict(d_t=d_t, d_a=d_a, kk=kk, dgc=dgc, dbeta=dbeta)  # [n, H, ...] as the debug buffer
    t_dw = tt @ dw
    k_dw = (k * t_dw).sum(-1)
    dbeta = dbeta + gc.exp() * k_dw
    dgc = dgc + ks * k_dw
    d_kk = d_a * beta[..., :, None]
    dk = dk_other + t_dw * ks[..., None] + d_kk @ k + d_kk.transpose(-1, -2) @ k
    dg = dgc.flip(-1).cumsum(-1).flip(-1)
    back = lambda x: x.transpose(1, 2).reshape(total, H, *x.shape[3:])  # noqa: E731
    return (back(dk), back(dv), back(dbeta), back(dg)), inner


def relative(got, want):
    return ((got.double() - want).norm() / want.norm()).item()


def main():
    from gdn.kernels.gated_delta._common import chunk_layout

    device = "cuda" if torch.cuda.is_available() else "cpu"  # the CPU (TRITON_INTERPRET=1): a small check
    B, T, H, K, V = (4, 1024, 4, 128, 128) if device == "cuda" else (1, 128, 1, 32, 32)
    if sys.argv[1:] == ["--time"]:
        return time_variants()
    names = sys.argv[1:] or list(VARIANTS)
    for dtype in (torch.bfloat16, torch.float16):
        x = make_inputs(B, T, H, K, V, dtype, device)
        record = run_stages(x, B, T, 0.1)
        args = record["wy_backward"][0]
        want, inner = wy_backward_float64(*args)
        layout = chunk_layout(B, T, None, x["q"].device)
        with tempfile.TemporaryDirectory() as folder:
            for name in names:
                module = load_variant(name, VARIANTS[name], folder)
                got = module.wy_backward(*args, layout)
                errors = [relative(g, w) for g, w in zip(got, want)]
                line = (f"{str(dtype):15s} {name:26s} dk {errors[0]:.1e}  dv {errors[1]:.1e}  dbeta {errors[2]:.1e}  "
                        f"dg {errors[3]:.1e}")
                dbg = getattr(module, "LAST_DEBUG", None)
                if dbg is not None:  # which intermediate parts from float64 first
                    d_t, d_a, kk = dbg[:, :, 0], dbg[:, :, 1], dbg[:, :, 2]
                    dgc, dbeta = dbg[:, :, 3, 0], dbg[:, :, 3, 1]
                    # d_a from the kernel's own d_t, in float64: the error of the two T^T products alone
                    tt = args[4].double().reshape(-1, 64, H, 64).transpose(1, 2).transpose(-1, -2)
                    gc = args[3].double().reshape(-1, 64, H).transpose(1, 2)
                    lower = torch.ones(64, 64, dtype=torch.bool, device=d_t.device).tril(-1)
                    decay = (gc[..., :, None] - gc[..., None, :]).masked_fill(~lower, float("-inf")).exp()
                    d_a_own = -(tt @ d_t.double() @ tt) * decay
                    line += (f"   | d_t {relative(d_t, inner['d_t']):.1e}  d_a {relative(d_a, inner['d_a']):.1e}"
                             f" (from own d_t {relative(d_a, d_a_own):.1e})  kk {relative(kk, inner['kk']):.1e}"
                             f"  dgc {relative(dgc, inner['dgc']):.1e}  dbeta {relative(dbeta, inner['dbeta']):.1e}")
                print(line, flush=True)


def time_variants():
    """wy_backward's median ms per variant of TIMED at the benchmark's shapes (bf16), all in one process."""
    import triton

    from gdn.kernels.gated_delta._common import chunk_layout

    with tempfile.TemporaryDirectory() as folder:
        modules = {name: load_variant(name, VARIANTS[name], folder) for name in TIMED}
        for B, T, H, K, V in TIMED_SHAPES:
            x = make_inputs(B, T, H, K, V, torch.bfloat16, "cuda")
            args = run_stages(x, B, T, K**-0.5)["wy_backward"][0]
            layout = chunk_layout(B, T, None, x["q"].device)
            for name, module in modules.items():
                ms = triton.testing.do_bench(lambda: module.wy_backward(*args, layout), warmup=25, rep=200,
                                             return_mode="median")
                print(f"wy_backward {B}x{T}x{H}x{K}/{V} {name:30s} {ms:.3f} ms", flush=True)


if __name__ == "__main__":
    main()
