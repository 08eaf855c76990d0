"""Training throughput of the real trainer step (gdn.train.trainer.Trainer.train_step) on GPUs, without Hydra.

Needs only torch, triton, numpy, tqdm and this checkout (no hydra / omegaconf / mlflow). Modes:

  single    one GPU, no sharding: tokens/s, MFU, peak memory for one configuration
            python benchmarks/bench_train.py single --ac none --compile off
  fsdp      under torchrun, FSDP2 over N GPUs, each GPU its own --batch rows (global batch = N x batch):
            torchrun --nproc_per_node=4 benchmarks/bench_train.py fsdp --ac none --compile off
  equality  the NCCL version of tests/train/test_distributed.py: a tiny GDN in fp32, 10 steps; run once in one
            process (--save), then under torchrun with 2 GPUs (--reference), which prints the largest relative
            difference of the losses and gradient norms:
            python benchmarks/bench_train.py equality --save /tmp/eq.json &&
            torchrun --nproc_per_node=2 benchmarks/bench_train.py equality --reference /tmp/eq.json

Model: GDN at scale=1.3b by default (conf/scale/1.3b/gdn.yaml on conf/model/gdn.yaml, read without Hydra;
tests/train/test_bench_train.py checks it against the Hydra composition), or any conf/model at scale=1.3b or small
(--model samba-1.3b, --model gdn-small), vocab 32000, untied; data: uniform random tokens (no data cost), one
sequence per row or --documents N per row (cu_seqlens, as packed text gives the varlen kernels).
Prints one JSON line per result. MFU counts model FLOPs only (gdn.models.flops, training = 3 x forward): activation
checkpointing's recomputation is not in it.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from gdn.data import Batch  # noqa: E402
from gdn.models import LanguageModel  # noqa: E402
from gdn.models.config_files import CONF_DIR, merge, model_kwargs  # noqa: E402
from gdn.models.flops import training_flops_per_token  # noqa: E402
from gdn.train import distributed as dist_utils  # noqa: E402
from gdn.train.metrics import bf16_peak_flops  # noqa: E402
from gdn.train.optim import build_optimizer  # noqa: E402
from gdn.train.parallelize import DTYPES, ParallelSettings, parallelize  # noqa: E402
from gdn.train.schedule import WarmupConstant  # noqa: E402
from gdn.train.tracking import NullTracker  # noqa: E402
from gdn.train.trainer import Trainer, TrainerSettings  # noqa: E402


def composed_config(model: str, scale: str | None, **overrides) -> dict:
    """conf/model/MODEL.yaml (+ conf/scale/SCALE/MODEL.yaml) as gdn-train composes them, without the vocabulary."""
    config = model_kwargs(model, scale)
    config.pop("vocab_size")
    return merge(config, overrides)


GDN_1_3B = composed_config("gdn", "1.3b")
GDN_TINY = composed_config("gdn", None, d_model=128, mixers={"gdn": {"head_dim": 64}})
SCALES = ("1.3b", "small")
MODEL_CHOICES = ["tiny", *(f"{path.stem}-{scale}" for scale in SCALES
                           for path in sorted((CONF_DIR / "model").glob("*.yaml")))]


def benchmark_model(choice: str) -> dict:
    """--model: "tiny" (a 2-block GDN) or NAME-SCALE (conf/model/NAME.yaml at scale=SCALE)."""
    if choice == "tiny":
        return GDN_TINY
    name, scale = choice.rsplit("-", 1)
    return composed_config(name, scale)


class RandomTokens:
    """Uniform random tokens, random access by batch index (like the real data modules), no eval set; with
    documents_per_row, each row is cut into that many documents at random places (cu_seqlens, as packed text)."""

    def __init__(self, vocab_size: int, seq_len: int, batch_size: int, seed: int = 0, documents_per_row: int = 0):
        self.vocab_size, self.seq_len, self.batch_size, self.seed = vocab_size, seq_len, batch_size, seed
        self.documents_per_row = documents_per_row

    def train_batch(self, index: int) -> Batch:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        tokens = torch.randint(self.vocab_size, (self.batch_size, self.seq_len + 1), generator=generator)
        if self.documents_per_row < 2:
            return Batch(tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous())
        rows = torch.arange(self.batch_size + 1) * self.seq_len
        cuts = [torch.randperm(self.seq_len - 1, generator=generator)[: self.documents_per_row - 1] + 1 + start
                for start in rows[:-1].tolist()]
        cu_seqlens = torch.cat([rows, *cuts]).sort().values.to(torch.int32)
        return Batch(tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous(), cu_seqlens)

    def eval_batches(self) -> list[Batch]:
        return []


def build_trainer(model_config: dict, vocab_size: int, data: RandomTokens, parallel: ParallelSettings,
                  precision: str, loss_chunk_tokens: int | None, folder: Path, weights_dtype: str = "fp32"):
    device = dist_utils.local_device("auto")
    torch.manual_seed(0)
    with device:  # initialise on the GPU itself (1.4B parameters take a while on the CPU)
        model = LanguageModel(vocab_size=vocab_size, **model_config).to(DTYPES[weights_dtype])
    flops = training_flops_per_token(model, data.seq_len)
    mesh = dist_utils.ParallelDims.from_config(parallel.dp_replicate, parallel.dp_shard,
                                               dist_utils.world_size()).build_mesh(device.type)
    model = parallelize(model, parallel, device, mesh)
    optimizer = build_optimizer(model, functools.partial(torch.optim.AdamW, lr=3e-4, weight_decay=0.1))
    settings = TrainerSettings(max_steps=10**6, grad_clip=1.0, precision=precision, weights_dtype=weights_dtype,
                               progress_bar=False, loss_chunk_tokens=loss_chunk_tokens, parallel=parallel)
    return Trainer(model, data, optimizer, WarmupConstant(1), settings, NullTracker(), folder), flops


def throughput(args) -> dict:
    world = dist_utils.world_size()
    device = dist_utils.local_device("auto")
    cuda = device.type == "cuda"
    data = RandomTokens(args.vocab, args.seq_len, args.batch * world, documents_per_row=args.documents)
    parallel = ParallelSettings(activation_checkpointing=args.ac, ac_every=args.ac_every,
                                compile=args.compile == "on", reshard_after_forward=args.reshard_after_forward)
    result = {"mode": args.mode, "gpus": world, "device": torch.cuda.get_device_name() if cuda else "cpu",
              "torch": torch.__version__, "model": args.model, "weights": args.weights, "ac": args.ac,
              "compile": args.compile, "cudagraphs": args.cudagraphs,
              "batch_per_gpu": args.batch, "seq_len": args.seq_len, "documents_per_row": args.documents,
              "loss_chunk_tokens": args.loss_chunk}
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    model_config = benchmark_model(args.model)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            trainer, flops = build_trainer(model_config, args.vocab, data, parallel, "auto", args.loss_chunk, Path(tmp),
                                           args.weights)
            start = time.perf_counter()
            for _ in range(args.warmup):
                trainer.train_step()
            if cuda:
                torch.cuda.synchronize()
            warmup_s = time.perf_counter() - start
            start = time.perf_counter()
            for _ in range(args.steps):
                loss, grad_norm = trainer.train_step()  # .item() inside: each step ends synchronised
            elapsed = time.perf_counter() - start
            profile = profile_steps(trainer, args.profile) if args.profile else None
            if args.host_profile:
                host_profile_steps(trainer, args.host_profile)
    except torch.cuda.OutOfMemoryError as error:
        return {**result, "error": f"out of memory: {str(error).splitlines()[0]}"}
    tokens_per_s = args.steps * args.batch * world * args.seq_len / elapsed
    per_gpu = tokens_per_s / world
    peak = bf16_peak_flops(device)
    return {**result, "parameters": sum(p.numel() for p in trainer.model.parameters()),  # DTensor: global size
            "tokens_per_s": round(tokens_per_s), "tokens_per_s_per_gpu": round(per_gpu),
            "step_s": round(elapsed / args.steps, 4), "warmup_s": round(warmup_s, 1),
            "mfu": round(per_gpu * flops / peak, 4) if peak else None, "training_flops_per_token": flops,
            "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
            "peak_reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2) if cuda else None,
            "last_loss": loss,
            "last_grad_norm": grad_norm} | ({"profile": profile} if profile else {})


def profile_steps(trainer: Trainer, steps: int, top: int = 25) -> dict:
    """STEPS more steps under torch.profiler: per step, the wall time, the GPU's busy time (the union of its kernels'
    intervals: wall minus busy is the time the GPU waited for the host), the kernel count, and the TOP kernels by
    time (printed as a table on stderr; the numbers go into the JSON line)."""
    from torch.profiler import ProfilerActivity, profile
    from torch.autograd import DeviceType

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as recorded:
        start = time.perf_counter()
        for _ in range(steps):
            trainer.train_step()
        wall_s = time.perf_counter() - start
    kernels = sorted((e for e in recorded.events() if e.device_type == DeviceType.CUDA),
                     key=lambda e: e.time_range.start)
    busy_us, end = 0.0, float("-inf")
    for kernel in kernels:  # the union of the kernels' intervals
        busy_us += max(0.0, kernel.time_range.end - max(kernel.time_range.start, end))
        end = max(end, kernel.time_range.end)
    by_name: dict[str, list[float]] = {}
    for kernel in kernels:
        by_name.setdefault(kernel.name[:70], []).append(kernel.time_range.elapsed_us())
    ranked = sorted(by_name.items(), key=lambda item: -sum(item[1]))[:top]
    result = {"wall_ms_per_step": round(wall_s * 1e3 / steps, 2),
              "gpu_busy_ms_per_step": round(busy_us / 1e3 / steps, 2),
              "kernels_per_step": round(len(kernels) / steps, 1),
              "top_kernels": [[name, round(sum(times) / 1e3 / steps, 3), round(len(times) / steps, 1)]
                              for name, times in ranked]}
    print(f"profile: {result['wall_ms_per_step']} ms a step, GPU busy {result['gpu_busy_ms_per_step']} ms, "
          f"{result['kernels_per_step']} kernels", file=sys.stderr)
    for name, ms, count in result["top_kernels"]:
        print(f"  {ms:8.3f} ms {count:6.1f}x  {name}", file=sys.stderr)
    host = sorted((e for e in recorded.key_averages() if e.self_cpu_time_total > 0),
                  key=lambda e: -e.self_cpu_time_total)[:top]
    result["top_host_ops"] = [[e.key[:70], round(e.self_cpu_time_total / 1e3 / steps, 3), round(e.count / steps, 1)]
                              for e in host]
    print("host time by op (self CPU time):", file=sys.stderr)
    for name, ms, count in result["top_host_ops"]:
        print(f"  {ms:8.3f} ms {count:6.1f}x  {name}", file=sys.stderr)
    return result


def host_profile_steps(trainer: Trainer, steps: int, top: int = 40) -> None:
    """STEPS more steps under cProfile: where the host's time goes (Python functions by own and cumulative time,
    on stderr), for steps that the host, not the GPU, paces."""
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(steps):
        trainer.train_step()
    profiler.disable()
    for order in ("tottime", "cumulative"):
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats(order).print_stats(top)
        print(f"host profile of {steps} steps by {order}:\n{text.getvalue()}", file=sys.stderr)


def equality(args) -> dict:
    """10 fp32 steps of a tiny GDN; the same global batch (8 rows) at any world size."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    data = RandomTokens(256, 256, 8)
    parallel = ParallelSettings(param_dtype="fp32", compile=False)
    with tempfile.TemporaryDirectory() as tmp:
        trainer, _ = build_trainer(GDN_TINY, 256, data, parallel, "fp32", 1024, Path(tmp))
        steps = [trainer.train_step() for _ in range(10)]
    losses, norms = [s[0] for s in steps], [s[1] for s in steps]
    result = {"mode": "equality", "gpus": dist_utils.world_size(), "losses": losses, "grad_norms": norms}
    if args.save:
        Path(args.save).write_text(json.dumps(result))
    if args.reference:
        reference = json.loads(Path(args.reference).read_text())
        diff = max(abs(a - b) / abs(b) for a, b in zip(losses + norms, reference["losses"] + reference["grad_norms"]))
        result |= {"reference_gpus": reference["gpus"], "max_relative_difference": diff, "pass_1e-5": diff <= 1e-5}
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["single", "fsdp", "equality"])
    parser.add_argument("--model", choices=MODEL_CHOICES, default="gdn-1.3b",
                        help="NAME-SCALE: conf/model/NAME.yaml at scale=SCALE (1.3b or small); tiny: a 2-block GDN to "
                             "check the script itself (runs on the CPU too)")
    parser.add_argument("--documents", type=int, default=0,
                        help="documents per row (cu_seqlens, as in packed text); 0: one sequence per row")
    parser.add_argument("--ac", choices=["none", "full", "selective", "op"], default="none")
    parser.add_argument("--ac-every", type=int, default=2)
    parser.add_argument("--compile", choices=["on", "off"], default="off")
    parser.add_argument("--cudagraphs", action="store_true",
                        help="with --compile on: Inductor records each compiled block's forward and backward as CUDA "
                             "graphs (what compile mode reduce-overhead does), to size what the launches cost. "
                             "Whole rows only: a replay skips the Python that builds a packed batch's chunk layout")
    parser.add_argument("--weights", choices=["fp32", "bf16"], default="fp32",
                        help="trainer.weights_dtype: fp32 master weights, or the whole model in bf16 (FLA's anchor)")
    parser.add_argument("--reshard-after-forward", type=lambda s: s.lower() == "true", default=True)
    parser.add_argument("--batch", type=int, default=8, help="rows per GPU")
    parser.add_argument("--seq-len", type=int, default=4096)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--loss-chunk", type=int, default=8192, help="tokens per LM-head/loss chunk (0: plain)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--profile", type=int, default=0, metavar="STEPS",
                        help="then STEPS more steps under torch.profiler: GPU busy time, kernel count, top kernels")
    parser.add_argument("--host-profile", type=int, default=0, metavar="STEPS",
                        help="then STEPS more steps under cProfile: the host's time by Python function")
    parser.add_argument("--save", help="equality: write this run's losses here")
    parser.add_argument("--reference", help="equality: compare with losses saved by --save")
    args = parser.parse_args(argv)
    args.loss_chunk = args.loss_chunk or None
    if args.mode == "single" and dist_utils.env_world_size() > 1:
        parser.error("single runs in one process; use fsdp under torchrun")
    if args.cudagraphs:
        if args.compile != "on" or args.documents:
            parser.error("--cudagraphs needs --compile on and whole rows (--documents 0)")
        import torch._inductor.config
        torch._inductor.config.triton.cudagraphs = True
    dist_utils.init_process_group(dist_utils.local_device("auto").type)
    try:
        result = equality(args) if args.mode == "equality" else throughput(args)
    finally:
        dist_utils.destroy_process_group()
    if os.environ.get("RANK", "0") == "0":
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
