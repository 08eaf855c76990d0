"""Training throughput and peak memory of every architecture at scale=1.3b on one GPU, beside the paper's Fig. 3.

    python benchmarks/bench_models.py                                   # all 7 models x 2K x 16 ... 16K x 2
    python benchmarks/bench_models.py --models gdn,samba --seq-lens 2048,16384 --budget-s 300
    python benchmarks/bench_models.py --smoke                           # CPU, scale=tiny, toy shapes (a typo check)

Needs torch, triton, PyYAML and this checkout only (no Hydra / OmegaConf / MLflow): the models come from
conf/model + conf/scale through gdn.models.config_files, at vocab 32000. One step = forward + backward + AdamW:
bf16 autocast, our Triton kernels (the mixers' backend "auto" on CUDA; attention: SDPA flash/cuDNN when causal
suffices, FlexAttention for windows), the trainer's chunked LM head + cross-entropy (8192 tokens at a time, never
the whole [tokens, vocab] logits), random tokens. No activation checkpointing, no torch.compile of the blocks, one
GPU, no FSDP. Weights: bf16 by default (as the FLA anchor of anchors-measured.md: "weights in bf16, fused AdamW"),
except the SSM / gate parameters (A_log, dt_bias, D), kept fp32; --weights fp32 keeps fp32 master weights under
bf16 autocast (the single-GPU trainer's way; about 11 GB more at 1.3B, which may not fit at 32K tokens a step).

Per cell (model, B x T with B T = 32K tokens): 2 warm-up steps (Triton/Flex compilation happens here), then
--steps timed steps; tokens/s = steps x tokens / wall time (CUDA-synchronised), peak GiB = the allocator's peak
over the timed steps (weights, gradients and optimizer state included). An out-of-memory cell prints OOM and the
run goes on; cells that would start after --budget-s seconds print "skipped". TFLOP/s counts model FLOPs only
(gdn.models.flops, training = 3 x forward).
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from gdn.models import LanguageModel  # noqa: E402
from gdn.models.config_files import model_kwargs  # noqa: E402
from gdn.models.flops import training_flops_per_token  # noqa: E402
from gdn.train.loss import ChunkedLossHead  # noqa: E402

MODELS = ["gdn", "mamba2", "gdn_h1", "gdn_h2", "samba", "transformer", "deltanet"]
SEQ_LENS = [2048, 4096, 8192, 16384]
PAPER_VOCAB = 32000
LOSS_CHUNK_TOKENS = 8192
# Paper Fig. 3 (1.3B models, one H100), K tokens/s read off the plot (gated-deltanet-facts.md) at 2K ... 16K;
# None where the plot gives no reading for that length.
FIG3_K_TOKENS_PER_S = {
    "gdn": {2048: 45.5, 4096: 45.5, 8192: 45.5, 16384: 45.5},
    "mamba2": {2048: 48, 4096: 48, 8192: 48, 16384: 48},
    "gdn_h1": {2048: 55, 16384: 52.5},
    "gdn_h2": {2048: 49.5, 4096: 49.5, 8192: 49.5, 16384: 49.5},
    "samba": {2048: 45, 16384: 43},
    "transformer": {2048: 55, 16384: 26.5},
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated conf/model names")
    parser.add_argument("--seq-lens", default=",".join(map(str, SEQ_LENS)), help="comma-separated lengths")
    parser.add_argument("--tokens-per-step", type=int, default=32768, help="batch = tokens / length")
    parser.add_argument("--scale", default="1.3b")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per cell")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per cell (compilation)")
    parser.add_argument("--budget-s", type=float, default=480.0, help="start no cell after this many seconds")
    parser.add_argument("--weights", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--smoke", action="store_true", help="CPU, scale=tiny, lengths 32/64, 128 tokens per step")
    args = parser.parse_args(argv)
    if args.smoke:
        args.scale, args.seq_lens, args.tokens_per_step, args.steps, args.warmup = "tiny", "32,64", 128, 1, 1
    args.models = args.models.split(",")
    args.seq_lens = [int(length) for length in args.seq_lens.split(",")]
    unknown = sorted(set(args.models) - set(MODELS))
    if unknown:
        parser.error(f"unknown models {unknown}; choices: {','.join(MODELS)}")
    bad = [length for length in args.seq_lens if args.tokens_per_step % length]
    if bad:
        parser.error(f"--tokens-per-step {args.tokens_per_step} is not a multiple of the lengths {bad}")
    return args


def build(model_name: str, scale: str, device: torch.device, weights: str):
    torch.manual_seed(0)
    with device:
        model = LanguageModel(**model_kwargs(model_name, scale, vocab_size=PAPER_VOCAB))
    if weights == "bf16":
        keep_fp32_gate_parameters_only(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-4, betas=(0.9, 0.95), weight_decay=0.1,
                                  fused=device.type == "cuda")
    return model, optimizer


def keep_fp32_gate_parameters_only(model: torch.nn.Module) -> None:
    """Every weight in bf16 except the SSM and gate parameters (A_log, dt_bias, D, Mamba1's dt bias: those flagged
    `_no_weight_decay`), which the layers read in fp32; a few thousand values per layer."""
    for param in model.parameters():
        if not getattr(param, "_no_weight_decay", False):
            param.data = param.data.bfloat16()


def train_step(model, optimizer, input_ids, labels, device):
    with torch.autocast(device.type, dtype=torch.bfloat16):
        loss = model(input_ids, head=ChunkedLossHead(labels, LOSS_CHUNK_TOKENS)) / labels.numel()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure_cell(model, optimizer, batch, length, args, device) -> dict:
    """Warm-up, then timed steps: tokens/s and the peak memory (GiB) over the timed steps."""
    gen = torch.Generator(device=device).manual_seed(length)
    input_ids = torch.randint(0, PAPER_VOCAB, (batch, length), device=device, generator=gen)
    labels = torch.randint(0, PAPER_VOCAB, (batch, length), device=device, generator=gen)
    for _ in range(args.warmup):
        train_step(model, optimizer, input_ids, labels, device)
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = train_step(model, optimizer, input_ids, labels, device)
    synchronize(device)
    elapsed = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    if not torch.isfinite(loss):
        raise FloatingPointError(f"non-finite loss {loss.item()}")
    return {"tokens_per_s": args.steps * batch * length / elapsed, "peak_gib": peak}


def free_memory():
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def fig3(model_name: str, length: int) -> str:
    reading = FIG3_K_TOKENS_PER_S.get(model_name, {}).get(length)
    return "-" if reading is None else f"~{reading:g}K"


def main(argv=None) -> None:
    args = parse_args(argv)
    device = torch.device("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    if device.type == "cpu" and not args.smoke:
        raise SystemExit("error: no CUDA device; run on a GPU, or pass --smoke for the CPU check")
    card = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"# bench_models: scale={args.scale}, vocab {PAPER_VOCAB}, {args.tokens_per_step} tokens per step, "
          f"{args.weights} weights, bf16 autocast, {args.warmup} warm-up + {args.steps} timed steps, on {card}; "
          f"torch {torch.__version__}", flush=True)
    started, rows = time.perf_counter(), []
    for model_name in args.models:
        if time.perf_counter() - started > args.budget_s:
            rows += [(model_name, None, length, None, "skipped (time budget)") for length in args.seq_lens]
            continue
        try:
            model, optimizer = build(model_name, args.scale, device, args.weights)
        except torch.OutOfMemoryError:
            rows += [(model_name, None, length, None, "OOM (model)") for length in args.seq_lens]
            free_memory()
            continue
        params = model.num_parameters()
        for length in args.seq_lens:
            batch = args.tokens_per_step // length
            if time.perf_counter() - started > args.budget_s:
                rows.append((model_name, params, length, None, "skipped (time budget)"))
                continue
            cell_start = time.perf_counter()
            try:
                result = measure_cell(model, optimizer, batch, length, args, device)
                result["tflops"] = result["tokens_per_s"] * training_flops_per_token(model, length) / 1e12
                status = "ok"
            except torch.OutOfMemoryError:
                result, status = None, "OOM"
            except Exception as error:  # one failing cell must not cost the rest of the device run
                traceback.print_exc()
                result, status = None, f"error: {type(error).__name__}"
            optimizer.zero_grad(set_to_none=True)
            free_memory()
            rows.append((model_name, params, length, result, status))
            shown = f"{result['tokens_per_s']:,.0f} tok/s, peak {result['peak_gib']:.1f} GiB" if result else status
            print(f"{model_name:12s} {batch:3d} x {length:6d}: {shown}  ({time.perf_counter() - cell_start:.0f} s)",
                  flush=True)
        del model, optimizer
        free_memory()
    print_table(rows, args)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


def print_table(rows, args) -> None:
    print("\n| model | params | B x T | tokens/s | peak GiB | model TFLOP/s | paper Fig. 3 |")
    print("|---|---|---|---|---|---|---|")
    for model_name, params, length, result, status in rows:
        shape = f"{args.tokens_per_step // length} x {length}"
        params_cell = "-" if params is None else f"{params / 1e9:.3f}B" if params >= 1e8 else f"{params / 1e6:.1f}M"
        if result is None:
            cells = [status, "-", "-"]
        else:
            peak = "-" if result["peak_gib"] != result["peak_gib"] else f"{result['peak_gib']:.1f}"  # NaN on the CPU
            cells = [f"{result['tokens_per_s']:,.0f}", peak, f"{result['tflops']:.0f}"]
        print(f"| {model_name} | {params_cell} | {shape} | " + " | ".join(cells) + f" | {fig3(model_name, length)} |")
    print("\nAnchor (anchors-measured.md, H100): FLA GatedDeltaNetForCausalLM 1.39B (= scale=1.3b gdn), bf16 weights, "
          "fused AdamW: 48,150 tokens/s at 8 x 4096, 46,914 at 2 x 16384, 64.7 GiB.")


if __name__ == "__main__":
    main()
