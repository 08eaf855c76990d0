"""Training throughput of FLA's own GatedDeltaNetForCausalLM, the anchor of issue 15's trainer target, built at the
sizes of our `model=gdn` at a scale (1.3b: d_model 2048, 21 blocks, 6 heads of d_k 256 / d_v 512, MLP 5632,
vocab 32000, untied), in the setting of anchors-measured.md: bf16 weights, fused AdamW, FLA's fused cross-entropy,
no torch.compile, no checkpointing, uniform random tokens. Prints one JSON line in bench_train.py's format, so that
the two run side by side in one device call:

    python3 benchmarks/bench_fla_model.py --batch 8 --seq-len 4096           # FLA (carry .whl-gdn: fla-core 0.6.0)
    python3 benchmarks/bench_train.py single --weights bf16 --compile on     # ours, same card, same call

FLA autotunes its kernels on its first steps (minutes on an H100 or H200, more than 330 s once on an H200): each
warm-up step's time is printed, and --warmup-budget-s stops the warm-up early (the timed steps then still include
whatever tuning is left, and the JSON says so). FLA refuses its gated backward on Hopper with Triton 3.4-3.7.0
(FLA issue 640: miscompiled there); the guard is lifted to time it: only its speed is measured, not its gradients.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from gdn.models import LanguageModel  # noqa: E402
from gdn.models.config_files import model_kwargs  # noqa: E402


def fla_config_kwargs(scale: str, vocab_size: int) -> dict:
    """GatedDeltaNetConfig arguments for our model=gdn at `scale` (conf/model/gdn.yaml + conf/scale/SCALE/gdn.yaml)."""
    ours = model_kwargs("gdn", scale)
    mixer = ours["mixers"]["gdn"]
    if ours["layers"] != ["gdn"] or ours.get("tie_embeddings"):
        raise ValueError(f"model=gdn at scale={scale} is not FLA's plain untied GDN stack: {ours['layers']}")
    return dict(hidden_size=ours["d_model"], num_hidden_layers=ours["n_layers"], num_heads=mixer["num_heads"],
                head_dim=mixer["head_dim"], expand_v=mixer["expand_v"], conv_size=mixer.get("conv_size", 4),
                intermediate_size=ours["mlp_hidden"], vocab_size=vocab_size, tie_word_embeddings=False,
                fuse_cross_entropy=True, use_cache=False)


def our_parameters(scale: str, vocab_size: int) -> int:
    """The parameter count of our model=gdn at `scale` (built on the meta device: no memory)."""
    config = model_kwargs("gdn", scale)
    config["vocab_size"] = vocab_size
    with torch.device("meta"):
        return sum(p.numel() for p in LanguageModel(**config).parameters())


def build_fla_model(scale: str, vocab_size: int, device: torch.device):
    import fla.ops.common.chunk_o as fla_chunk_o
    from fla.models import GatedDeltaNetConfig, GatedDeltaNetForCausalLM

    fla_chunk_o.TRITON_ABOVE_3_7_1 = True  # FLA issue 640's guard, lifted to time the kernel (see the docstring)
    torch.manual_seed(0)
    with device:
        return GatedDeltaNetForCausalLM(GatedDeltaNetConfig(**fla_config_kwargs(scale, vocab_size))).to(torch.bfloat16)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="1.3b")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=4096)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--warmup-budget-s", type=float, default=420.0)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args(argv)
    device = torch.device("cuda")
    model = build_fla_model(args.scale, args.vocab, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1, fused=True)
    generator = torch.Generator(device=device).manual_seed(0)

    def step() -> float:
        tokens = torch.randint(args.vocab, (args.batch, args.seq_len), device=device, generator=generator)
        loss = model(input_ids=tokens, labels=tokens).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    warmup_steps, started = [], time.perf_counter()
    for _ in range(args.warmup):
        step_start = time.perf_counter()
        step()
        warmup_steps.append(round(time.perf_counter() - step_start, 1))
        print(f"warm-up step {len(warmup_steps)}: {warmup_steps[-1]} s", flush=True)
        if time.perf_counter() - started > args.warmup_budget_s:
            break
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    elapsed = time.perf_counter() - started
    tokens_per_s = args.steps * args.batch * args.seq_len / elapsed
    parameters = sum(p.numel() for p in model.parameters())
    print(json.dumps({
        "mode": "fla", "device": torch.cuda.get_device_name(), "torch": torch.__version__,
        "model": f"fla-gdn-{args.scale}", "weights": "bf16", "compile": "off", "batch_per_gpu": args.batch,
        "seq_len": args.seq_len, "parameters": parameters, "parameters_ours": our_parameters(args.scale, args.vocab),
        "tokens_per_s": round(tokens_per_s), "step_s": round(elapsed / args.steps, 4),
        "warmup_steps_s": warmup_steps, "warmup_complete": len(warmup_steps) == args.warmup,
        "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2), "last_loss": loss,
    }), flush=True)


if __name__ == "__main__":
    main()
