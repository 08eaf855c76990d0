"""Where do the Triton and the PyTorch backends part? One batch of packed documents through a `scale=small` model
at its init, in every setting the trainer can run it (backend x torch.compile x bf16 autocast), against the same
model in float64 (PyTorch path, eager): the loss, each block's output and every gradient.

    python benchmarks/backend_probe.py --models gdn,mamba2            # on the GPU: real shapes (16 x 2048)
    python benchmarks/backend_probe.py --smoke                        # CPU: scale=tiny, PyTorch backend only

Per setting: the loss minus the float64 loss, the worst block-output error and the worst gradient error (each
|x - ref| / |ref| over the whole tensor) with the parameter it is at. A path that computes what its float64
twin computes stays at the bf16 or fp32 rounding level; a path that computes something else stands out.
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from gdn.models import LanguageModel  # noqa: E402
from gdn.models.config_files import model_kwargs  # noqa: E402
from gdn.models.documents import positions_in_documents  # noqa: E402
from gdn.models.norms import RMSNormFunction  # noqa: E402
from gdn.train.loss import summed_cross_entropy  # noqa: E402
from gdn.train.parallelize import compile_block  # noqa: E402


def packed_batch(batch: int, length: int, vocab: int, mean_document: int, device: torch.device, seed: int = 0):
    """Random tokens in documents of geometric lengths (mean `mean_document`), packed over the flattened rows."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, (batch, length + 1), generator=generator)
    total, bounds = batch * length, [0]
    while bounds[-1] < total:
        step = int(torch.empty(1).geometric_(1 / mean_document, generator=generator).item())
        bounds.append(min(total, bounds[-1] + max(step, 1)))
    cu_seqlens = torch.tensor(bounds, dtype=torch.int32)
    return tokens[:, :-1].to(device), tokens[:, 1:].to(device), cu_seqlens.to(device)


def build(name: str, scale: str, vocab: int, backend: str) -> LanguageModel:
    kwargs = model_kwargs(name, scale, vocab_size=vocab)
    for mixer in kwargs["mixers"].values():
        if "backend" in mixer:
            mixer["backend"] = backend
    torch.manual_seed(0)
    return LanguageModel(**kwargs)


def run(model: LanguageModel, batch, bf16: bool, hooks: bool = True
        ) -> tuple[float, list[torch.Tensor], dict[str, torch.Tensor]]:
    """(mean loss, each block's output (hooks; else none), every gradient) of one forward and backward."""
    input_ids, labels, cu_seqlens = batch
    outputs: list[torch.Tensor] = []
    hooks = [block.register_forward_hook(lambda _m, _i, out: outputs.append(out.detach().double()))
             for block in model.blocks] if hooks else []
    model.zero_grad(set_to_none=True)
    with torch.autocast(input_ids.device.type, dtype=torch.bfloat16, enabled=bf16):
        logits = model(input_ids, cu_seqlens=cu_seqlens)
    loss = summed_cross_entropy(logits, labels) / labels.numel()
    loss.backward()
    for hook in hooks:
        hook.remove()
    grads = {name: param.grad.detach().double() for name, param in model.named_parameters()}
    return loss.item(), outputs, grads


def relative(x: torch.Tensor, ref: torch.Tensor) -> float:
    return ((x - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def probe(name: str, args, device: torch.device) -> None:
    batch = packed_batch(args.batch, args.length, args.vocab, args.mean_document, device)
    reference = build(name, args.scale, args.vocab, "torch").to(device, torch.float64)
    ref_loss, ref_outputs, ref_grads = run(reference, batch, bf16=False)
    state = {key: value.float() for key, value in reference.state_dict().items()}
    print(f"\n{name} at scale={args.scale}, {args.batch} x {args.length}, {len(batch[2]) - 1} documents; "
          f"float64 loss {ref_loss:.6f}")
    print("| backend | compile | autocast | loss - f64 | worst block output (block) | worst grad (param) |")
    print("|---|---|---|---|---|---|")
    for backend in args.backends:
        for compiled in args.compile:
            for bf16 in (False, True):
                model = build(name, args.scale, args.vocab, backend).to(device)
                model.load_state_dict(state)
                if compiled:
                    for block in model.blocks:
                        compile_block(block, device)
                loss, outputs, grads = run(model, batch, bf16, args.block_outputs)
                block_errors = [relative(out, ref) for out, ref in zip(outputs, ref_outputs)] or [float("nan")]
                worst_block = max(range(len(block_errors)), key=block_errors.__getitem__)
                grad_errors = {key: relative(grads[key], ref_grads[key]) for key in ref_grads}
                worst = sorted(grad_errors, key=grad_errors.get, reverse=True)[:3]
                print(f"| {backend} | {compiled} | {'bf16' if bf16 else 'off'} | {loss - ref_loss:+.2e} | "
                      f"{block_errors[worst_block]:.1e} ({worst_block}) | "
                      + ", ".join(f"{grad_errors[key]:.1e} ({key})" for key in worst) + " |", flush=True)
                del model
                torch.cuda.empty_cache() if device.type == "cuda" else None


class Called(torch.nn.Module):
    """module(x, *extra) with the first output kept: a part as the block calls it, to compile on its own."""

    def __init__(self, module: torch.nn.Module, *extra):
        super().__init__()
        self.module, self.extra = module, extra

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.module(x, *self.extra)
        return out[0] if isinstance(out, tuple) else out


class NormFunction(torch.nn.Module):
    """An RMSNorm's weight through RMSNormFunction itself (the path RMSNorm takes under torch.compile)."""

    def __init__(self, norm: torch.nn.Module):
        super().__init__()
        self.weight, self.eps = norm.weight, norm.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return RMSNormFunction.apply(x, self.weight, self.eps)


def compiled_vs_eager(part: torch.nn.Module, x: torch.Tensor) -> str:
    """The part compiled (inductor) against itself eager, fp32, the same input and output cotangent: the output's
    and every gradient's error, and each gradient's scale <g, g_eager> / |g_eager|^2 (1 when it is right)."""
    results = []
    for compiled in (False, True):
        module = copy.deepcopy(part)
        if compiled:
            torch._dynamo.reset()  # each part compiles afresh (the recompile limit would run it eager)
            module = torch.compile(module)
        inp = x.detach().clone().requires_grad_()
        out = module(inp)
        cotangent = torch.randn(out.shape, generator=torch.Generator(out.device).manual_seed(1), device=out.device)
        out.backward(cotangent)
        grads = {"input": inp.grad, **{n: p.grad for n, p in module.named_parameters() if p.grad is not None}}
        results.append((out.detach(), {n.removeprefix("_orig_mod."): g for n, g in grads.items()}))
    (out_e, grads_e), (out_c, grads_c) = results
    worst = sorted(grads_e, key=lambda n: -relative(grads_c[n], grads_e[n]))[:2]
    scales = {n: ((grads_c[n] * grads_e[n]).sum() / grads_e[n].pow(2).sum()).item() for n in worst}
    return f"output {relative(out_c, out_e):.1e}; " + ", ".join(
        f"{n} {relative(grads_c[n], grads_e[n]):.1e} (scale {scales[n]:.3f})" for n in worst)


def localize(name: str, args, device: torch.device) -> None:
    """Block 0's parts, each compiled on its own against itself eager, per backend."""
    _, _, cu_seqlens = packed_batch(args.batch, args.length, args.vocab, args.mean_document, device)
    d_model = model_kwargs(name, args.scale)["d_model"]
    x = torch.randn(1, args.batch * args.length, d_model, device=device)
    print(f"\n{name}: block 0's parts compiled vs eager (fp32, {len(cu_seqlens) - 1} documents)")
    torch._dynamo.reset()
    positions = torch.compile(positions_in_documents)(cu_seqlens, x.shape[1])
    eager = positions_in_documents(cu_seqlens, x.shape[1])
    print(f"  positions_in_documents compiled: {(positions != eager).sum().item()} of {eager.numel()} differ")
    for backend in args.backends:
        block = build(name, args.scale, args.vocab, backend).blocks[0].to(device)
        triton = backend == "triton"
        mixer = block.mixer
        convs = [("conv", mixer.conv)] if hasattr(mixer, "conv") else [("q_conv", mixer.q_conv)]
        parts = [("block", Called(block, cu_seqlens)), ("mixer", Called(mixer, cu_seqlens)),
                 ("mlp", Called(block.mlp)), ("mixer_norm", Called(block.mixer_norm))]
        parts += [(label, Called(conv, cu_seqlens, None, triton)) for label, conv in convs]
        parts += [("RMSNormFunction", Called(NormFunction(block.mixer_norm)))]
        for label, part in parts:
            width = x if label not in ("conv", "q_conv") else torch.randn(
                1, x.shape[1], part.module.weight.shape[0], device=device)
            print(f"  {backend} {label}: {compiled_vs_eager(part, width)}", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="gdn,mamba2")
    parser.add_argument("--scale", default="small")
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--mean-document", type=int, default=1500)
    parser.add_argument("--backends", default="triton,torch")
    parser.add_argument("--compile", default="0,1", help="torch.compile settings to try")
    parser.add_argument("--block-outputs", type=int, default=1, help="0: no forward hooks on the blocks")
    parser.add_argument("--localize", action="store_true",
                        help="instead: block 0's parts, each compiled on its own against itself eager")
    parser.add_argument("--smoke", action="store_true", help="CPU, scale=tiny, 2 x 64, PyTorch backend")
    args = parser.parse_args(argv)
    if args.smoke:
        args.scale, args.vocab, args.batch, args.length, args.mean_document = "tiny", 256, 2, 64, 40
        args.backends = "torch"
    args.backends = args.backends.split(",")
    args.compile = [bool(int(flag)) for flag in args.compile.split(",")]
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    for name in args.models.split(","):
        (localize if args.localize else probe)(name, args, device)


if __name__ == "__main__":
    main()
