"""Which part of the WY backward kernel computes something else on the GPU? (stage_replay.py found it: dbeta and
dg of wy_backward differ from the interpreter's by 1e-2 on the same inputs, every other stage to rounding.)
Runs variants of _wy.py's kernel, rewritten as text into temporary modules, on FLA's input distribution against a
float64 PyTorch wy_backward of the same inputs, and prints each variant's errors.

    python3 benchmarks/wy_backward_probe.py          # on the GPU
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
T_T = "    t_t = tl.trans(t)\n"
T_T_LOADED = ("    t_t = tl.load(t_ptr + (rows[None, :] * H + i_h) * BT + rt[:, None], mask=valid[None, :], "
              "other=0.0)\n")
K_T_LOADED = ("d_t += tl.dot(dwb.to(tl.float32), tl.load(k_ptr + (rows[None, :] * H + i_h) * K + ck[:, None], "
              "mask=valid[None, :] & (ck[:, None] < K), other=0.0).to(tl.float32) * k_scale[None, :], "
              "input_precision=PRECISION)")
V_T_LOADED = ("d_t += tl.dot(dub.to(tl.float32), tl.load(v_ptr + (rows[None, :] * H + i_h) * V + cv[:, None], "
              "mask=valid[None, :] & (cv[:, None] < V), other=0.0).to(tl.float32) * beta[None, :], "
              "input_precision=PRECISION)")
VARIANTS = {  # name: [(old, new) text replacements in _wy.py]
    "as is (tf32)": [],
    "ieee fp32 products": [(line, line.replace("input_precision=PRECISION", "input_precision='ieee'"))
                           for line in (D_T_K, D_T_V, D_A)],
    "t_t loaded transposed": [(T_T, T_T_LOADED)],
    "k, v loaded transposed": [(D_T_K, K_T_LOADED), (D_T_V, V_T_LOADED)],
    "all three loaded transposed": [(T_T, T_T_LOADED), (D_T_K, K_T_LOADED), (D_T_V, V_T_LOADED)],
    "col sum via trans": [("- tl.sum(d_log_a, 0)", "- tl.sum(tl.trans(d_log_a), 1)")],
    "8 warps": [("PRECISION=dot_precision(k.dtype), num_warps=4,\n    )\n    return dk, dv, dbeta, dg",
                 "PRECISION=dot_precision(k.dtype), num_warps=8,\n    )\n    return dk, dv, dbeta, dg")],
}


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
    t_dw = tt @ dw
    k_dw = (k * t_dw).sum(-1)
    dbeta = dbeta + gc.exp() * k_dw
    dgc = dgc + ks * k_dw
    d_kk = d_a * beta[..., :, None]
    dk = dk_other + t_dw * ks[..., None] + d_kk @ k + d_kk.transpose(-1, -2) @ k
    dg = dgc.flip(-1).cumsum(-1).flip(-1)
    back = lambda x: x.transpose(1, 2).reshape(total, H, *x.shape[3:])  # noqa: E731
    return back(dk), back(dv), back(dbeta), back(dg)


def main():
    from gdn.kernels.gated_delta._common import chunk_layout

    device = "cuda" if torch.cuda.is_available() else "cpu"  # the CPU (TRITON_INTERPRET=1): a small check
    B, T, H, K, V = (4, 1024, 4, 128, 128) if device == "cuda" else (1, 128, 1, 32, 32)
    for dtype in (torch.bfloat16, torch.float16):
        x = make_inputs(B, T, H, K, V, dtype, device)
        record = run_stages(x, B, T, 0.1)
        args = record["wy_backward"][0]
        want = wy_backward_float64(*args)
        layout = chunk_layout(B, T, None, x["q"].device)
        with tempfile.TemporaryDirectory() as folder:
            for name, replacements in VARIANTS.items():
                module = load_variant(name, replacements, folder)
                got = module.wy_backward(*args, layout)
                errors = [((g.double() - w).norm() / w.norm()).item() for g, w in zip(got, want)]
                print(f"{str(dtype):15s} {name:24s} dk {errors[0]:.1e}  dv {errors[1]:.1e}  dbeta {errors[2]:.1e}  "
                      f"dg {errors[3]:.1e}")


if __name__ == "__main__":
    main()
