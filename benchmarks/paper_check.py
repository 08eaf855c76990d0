"""The paper's recall check at a small scale on one GPU: every architecture trained briefly on MQAR and on
S-NIAH-2-style retrieval text, then MQAR accuracy over a grid and S-NIAH-2 accuracy per length (1K-8K).

Needs only torch, Triton and PyYAML (no Hydra, MLflow, datasets or tokenizers): models come from
gdn.models.config_files.model_kwargs, text is byte-level (gdn.data.byte_tokenizer, vocabulary 256), and the
evaluation is gdn-eval's own code (gdn.eval.mqar_grid.mqar_grid, gdn.eval.niah.niah_accuracy).

Training (one model per architecture, same steps, data and seed): a plain loop, bf16 autocast on CUDA, AdamW,
warm-up then cosine decay. Steps alternate between
  - an MQAR batch (gdn.data.mqar, tokens < --mqar-vocab, 1..max key-value pairs per batch, Zoology-style), and
  - a retrieval-text batch: S-NIAH-2 prompts built by gdn.eval.niah.make_sample (essay haystack, 7-digit needle)
    at random lengths and depths from a training seed stream, followed by the answer " VALUE."; the loss is on
    the answer bytes only, so every step teaches retrieval (the eval prompts come from another seed).
A model stops at --train-tokens or at --budget-s seconds of training, whichever comes first (the table says
which). Prints a markdown table and appends one JSON line per model to --out.

    python benchmarks/paper_check.py --models gdn,gdn_h1,gdn_h2,mamba2      # one device call each half
    python benchmarks/paper_check.py --smoke                                # CPU, scale=tiny, under a minute
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a bare checkout too

from gdn.data.batch import IGNORE_INDEX  # noqa: E402
from gdn.data.byte_tokenizer import BYTE_VOCAB_SIZE, ByteTokenizer  # noqa: E402
from gdn.data.mqar import MQARData, split_vocabulary  # noqa: E402
from gdn.eval.mqar_grid import mqar_grid  # noqa: E402
from gdn.eval.niah import make_sample, niah_accuracy  # noqa: E402
from gdn.models import LanguageModel  # noqa: E402
from gdn.models.config_files import model_kwargs  # noqa: E402
from gdn.train.schedule import WarmupCosine  # noqa: E402

ALL_MODELS = ("gdn", "gdn_h1", "gdn_h2", "mamba2", "samba", "transformer", "deltanet")
NIAH_TASK = 2
EVAL_RESERVE_S = 30.0  # kept back per model for building and evaluating it when --call-budget-s shrinks budgets
SHORTEST_PROMPT = 400  # bytes: the S-NIAH-2 question and needle alone take about 360
TRAIN_SEED_OFFSET = 1_000_003  # the retrieval-text training prompts use seed + this; evaluation uses seed


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(ALL_MODELS), help="comma-separated, from " + ",".join(ALL_MODELS))
    parser.add_argument("--scale", default="small", help="conf/scale/SCALE sizes (default small)")
    parser.add_argument("--train-tokens", type=int, default=50_000_000, help="per model, both tasks together")
    parser.add_argument("--budget-s", type=float, default=75.0, help="per model: training stops after this many s")
    parser.add_argument("--call-budget-s", type=float, default=480.0,
                        help="the whole run: a model's training budget shrinks so the models left still fit")
    parser.add_argument("--lr", type=float, default=4e-4,
                        help="peak learning rate; 4e-4 was the best of {4e-4, 1e-3, 2e-3} for six of the seven "
                             "models in RESULTS.md's sweep (Mamba2: 2e-3)")
    parser.add_argument("--warmup-steps", type=int, default=100)
    parser.add_argument("--mqar-batch", type=int, default=64)
    parser.add_argument("--mqar-len", type=int, default=512, help="MQAR training length")
    parser.add_argument("--mqar-kv", type=int, default=16, help="MQAR training draws 1..this many pairs per batch")
    parser.add_argument("--mqar-vocab", type=int, default=64,
                        help="MQAR tokens (training and evaluation) come from [0, this): keys 1..(V-1)//2, values "
                             "above; the model keeps the byte vocabulary. Smaller is easier (fewer keys and values "
                             "to tell apart: at the byte vocabulary, 127 keys and 128 values, every model of "
                             "the first GPU attempt stayed on the ln 128 plateau); must be >= 2 * max kv + 1")
    parser.add_argument("--niah-batch", type=int, default=16)
    parser.add_argument("--niah-train-len", type=int, default=2048, help="longest retrieval-text training prompt")
    parser.add_argument("--eval-mqar-kv", default="4,8,16")
    parser.add_argument("--eval-mqar-lens", default="256,512,1024")
    parser.add_argument("--eval-mqar-examples", type=int, default=512)
    parser.add_argument("--niah-lengths", default="1024,2048,4096,8192")
    parser.add_argument("--niah-samples", type=int, default=20, help="prompts per length, depths 0..1")
    parser.add_argument("--data-workers", type=int, default=6, help="processes building retrieval-text batches")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep-going", action="store_true",
                        help="run every model even if the first one ends on MQAR's chance plateau (by default the "
                             "call stops there: the other models would measure nothing)")
    parser.add_argument("--out", default=None,
                        help="JSON lines file (default $OUT/paper_check.jsonl, or ./paper_check.jsonl without $OUT)")
    parser.add_argument("--smoke", action="store_true", help="CPU, scale=tiny, a few steps, short lengths (< 60 s)")
    parser.add_argument("--summarize", nargs="+", metavar="JSONL",
                        help="train nothing: read these files' lines (runs at several --lr) and print each model at "
                             "its best learning rate (by MQAR mean), then every run")
    args = parser.parse_args(argv)
    if args.smoke:
        args.scale, args.train_tokens, args.budget_s, args.warmup_steps = "tiny", 12 * 4 * 128, 30.0, 2
        args.mqar_batch, args.mqar_len, args.mqar_kv = 4, 64, 8
        args.niah_batch, args.niah_train_len = 2, 512
        args.eval_mqar_kv, args.eval_mqar_lens, args.eval_mqar_examples = "4,8", "64", 16
        args.niah_lengths, args.niah_samples, args.data_workers = "512,1024", 2, 0
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(args.models) - set(ALL_MODELS))
    if unknown:
        parser.error(f"unknown models {unknown}: choose from {','.join(ALL_MODELS)}")
    for name in ("eval_mqar_kv", "eval_mqar_lens", "niah_lengths"):
        setattr(args, name, [int(v) for v in getattr(args, name).split(",")])
    if args.niah_train_len < SHORTEST_PROMPT + 100 or min(args.niah_lengths) < SHORTEST_PROMPT:
        parser.error(f"--niah-train-len must be >= {SHORTEST_PROMPT + 100} and --niah-lengths >= {SHORTEST_PROMPT}: "
                     "the S-NIAH-2 question and needle alone take about 360 bytes")
    if not 2 * max(args.mqar_kv, *args.eval_mqar_kv) + 1 <= args.mqar_vocab <= BYTE_VOCAB_SIZE:
        parser.error(f"--mqar-vocab must be in [2 * max kv + 1, {BYTE_VOCAB_SIZE}]: keys and values each need as many "
                     "distinct tokens as there are pairs")
    if args.out is None:
        args.out = str(Path(os.environ.get("OUT", ".")) / "paper_check.jsonl")
    return args


def retrieval_batch(batch_size: int, max_len: int, seed: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, max_len] inputs and labels: S-NIAH-2 prompts (lengths uniform in [max(max_len / 4, SHORTEST_PROMPT),
    max_len - answer], needle depths uniform) then " VALUE."; labels are the answer's bytes at the positions that
    predict them, IGNORE_INDEX elsewhere; 0-padded on the right."""
    tokenizer = ByteTokenizer()
    rng = random.Random(f"paper-check-{seed}-{step}")
    inputs = torch.zeros(batch_size, max_len, dtype=torch.long)
    labels = torch.full((batch_size, max_len), IGNORE_INDEX, dtype=torch.long)
    for row in range(batch_size):
        answer_room = 10  # " " + 7 digits + "." and one spare
        length = rng.randint(max(max_len // 4, SHORTEST_PROMPT), max_len - answer_room)
        sample = make_sample(NIAH_TASK, length, rng.random(), seed + TRAIN_SEED_OFFSET, step * batch_size + row,
                             lambda text: len(tokenizer.encode(text).ids))
        prompt = tokenizer.encode(sample.prompt).ids
        answer = tokenizer.encode(f" {sample.value}.").ids
        ids = prompt + answer
        inputs[row, : len(ids)] = torch.tensor(ids)
        # position t predicts token t + 1: the answer's bytes are predicted from the last prompt byte on
        labels[row, len(prompt) - 1 : len(ids) - 1] = torch.tensor(answer)
    return inputs, labels


class RetrievalBatches(torch.utils.data.Dataset):
    """retrieval_batch(..., step=i) as item i, so DataLoader workers build them ahead of the GPU (about 50 ms of CPU
    a 16 x 2048 batch: in the training loop itself it would cost as much as the GPU step)."""

    def __init__(self, count: int, batch_size: int, max_len: int, seed: int):
        self.count, self.batch_size, self.max_len, self.seed = count, batch_size, max_len, seed

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return retrieval_batch(self.batch_size, self.max_len, self.seed, index)


def autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def compile_shapes(model: LanguageModel, batches: list[torch.Tensor], device: torch.device) -> float:
    """One forward and backward per training shape, weights untouched, so that Triton's compilation and autotuning
    and FlexAttention's compile happen before the training clock starts (else the first model of a call, which
    pays for kernels the later ones reuse, would train on fewer tokens). Returns the seconds it took."""
    start = time.perf_counter()
    for inputs in batches:
        with autocast(device):
            logits = model(inputs.to(device))
        logits.float().mean().backward()
    model.zero_grad(set_to_none=True)
    synchronize(device)
    return round(time.perf_counter() - start, 1)


def train(model: LanguageModel, args: argparse.Namespace, device: torch.device, budget_s: float) -> dict:
    mqar = MQARData(vocab_size=args.mqar_vocab, seq_len=args.mqar_len, num_kv_pairs=args.mqar_kv,
                    batch_size=args.mqar_batch, seed=args.seed, min_train_kv_pairs=1)
    tokens_per_pair = args.mqar_batch * args.mqar_len + args.niah_batch * args.niah_train_len
    total_steps = max(2, 2 * (args.train_tokens // tokens_per_pair))
    schedule = WarmupCosine(args.warmup_steps, min_lr_ratio=0.1)  # cosine down to 10% of the peak
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1,
                                  fused=device.type == "cuda")
    retrieval = iter(torch.utils.data.DataLoader(
        RetrievalBatches(total_steps // 2, args.niah_batch, args.niah_train_len, args.seed), batch_size=None,
        num_workers=args.data_workers, pin_memory=device.type == "cuda",
        prefetch_factor=4 if args.data_workers else None))
    model.train()
    compile_s = compile_shapes(model, [mqar.train_batch(0).input_ids, retrieval_batch(
        args.niah_batch, args.niah_train_len, args.seed, 0)[0]], device)
    tokens, losses, stopped_by = 0, {"mqar": float("nan"), "niah": float("nan")}, "tokens"
    synchronize(device)
    start = time.perf_counter()
    step = 0
    for step in range(total_steps):
        if time.perf_counter() - start > budget_s:
            stopped_by = "time"
            break
        task = "mqar" if step % 2 == 0 else "niah"
        if task == "mqar":
            batch = mqar.train_batch(step // 2)
            inputs, labels = batch.input_ids, batch.labels
        else:
            inputs, labels = next(retrieval)
        inputs, labels = inputs.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        for group in optimizer.param_groups:
            group["lr"] = args.lr * schedule(step, total_steps)
        with autocast(device):
            logits = model(inputs)
        loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        tokens += inputs.numel()
        if step % 20 < 2 or step >= total_steps - 2:  # both tasks' losses (steps alternate), a sync every 20 steps
            losses[task] = loss.item()
    else:
        step = total_steps
    synchronize(device)
    del retrieval  # stops the workers
    return {"compile_s": compile_s, "train_steps": step, "planned_steps": total_steps, "train_tokens": tokens,
            "train_s": round(time.perf_counter() - start, 1), "stopped_by": stopped_by,
            "loss_mqar": round(losses["mqar"], 4), "loss_niah": round(losses["niah"], 4)}


@torch.no_grad()
def evaluate(model: LanguageModel, args: argparse.Namespace, device: torch.device) -> dict:
    model.eval()
    start = time.perf_counter()
    with autocast(device):
        mqar = mqar_grid(model, vocab_size=args.mqar_vocab, kv_pairs=args.eval_mqar_kv, seq_lens=args.eval_mqar_lens,
                         num_examples=args.eval_mqar_examples, batch_size=64, seed=args.seed, device=device)
        niah = niah_accuracy(model, ByteTokenizer(), tasks=[NIAH_TASK], lengths=args.niah_lengths,
                             num_samples=args.niah_samples, seed=args.seed)
    return {"mqar": mqar, "mqar_mean": sum(mqar.values()) / len(mqar), "niah": niah,
            "eval_s": round(time.perf_counter() - start, 1)}


def run_model(name: str, args: argparse.Namespace, device: torch.device, budget_s: float) -> dict:
    torch.manual_seed(args.seed)
    model = LanguageModel(**model_kwargs(name, args.scale, vocab_size=BYTE_VOCAB_SIZE)).to(device)
    row = {"model": name, "scale": args.scale, "lr": args.lr, "params": model.num_parameters(),
           "budget_s": round(budget_s, 1)}
    row |= train(model, args, device, budget_s)
    row |= evaluate(model, args, device)
    return row


def training_budget(model_budget_s: float, call_budget_s: float, elapsed_s: float, models_left: int) -> float:
    """A model's training seconds: its own budget, cut so that every model left gets an equal share of what
    remains of the call, EVAL_RESERVE_S of each share kept for building and evaluating; at least 1 s."""
    fair_share = (call_budget_s - elapsed_s) / models_left
    return max(1.0, min(model_budget_s, fair_share - EVAL_RESERVE_S))


def markdown_table(rows: list[dict], niah_lengths: list[int]) -> str:
    niah_heads = [f"S-NIAH-2 {length // 1024}K" if length % 1024 == 0 else f"S-NIAH-2 {length}"
                  for length in niah_lengths]
    head = ["model", "lr", "params", "train tokens", "train s", "stopped by", "MQAR loss", "MQAR mean", *niah_heads]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        niah = [f"{100 * row['niah'][f'niah/s{NIAH_TASK}_acc_len{length}']:.1f}" for length in niah_lengths]
        cells = [row["model"], f"{row['lr']:g}", f"{row['params'] / 1e6:.2f}M", f"{row['train_tokens'] / 1e6:.2f}M",
                 f"{row['train_s']:.0f}", row["stopped_by"], f"{row['loss_mqar']:.3f}", f"{100 * row['mqar_mean']:.1f}",
                 *niah]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def best_per_model(rows: list[dict]) -> list[dict]:
    """Each model's run with the highest MQAR mean (then S-NIAH mean), in ALL_MODELS order: Zoology's protocol
    of reporting every architecture at its own best learning rate."""
    def score(row):
        return row["mqar_mean"], sum(row["niah"].values()) / len(row["niah"])
    best = {}
    for row in rows:
        if row["model"] not in best or score(row) > score(best[row["model"]]):
            best[row["model"]] = row
    return [best[name] for name in ALL_MODELS if name in best]


def summarize(paths: list[str], niah_lengths: list[int]) -> str:
    rows = [json.loads(line) for path in paths for line in Path(path).read_text().splitlines() if line.strip()]
    order = {name: i for i, name in enumerate(ALL_MODELS)}
    every_run = sorted(rows, key=lambda row: (order[row["model"]], row["lr"]))
    best = markdown_table(best_per_model(rows), niah_lengths)
    return (f"Each model at its best learning rate (by MQAR mean):\n\n{best}\n\n"
            f"Every run:\n\n{markdown_table(every_run, niah_lengths)}")


def on_chance_plateau(loss_mqar: float, mqar_vocab: int) -> bool:
    """An MQAR loss within 5% of ln(number of values), a uniform guess among them (or NaN): nothing learned."""
    return not loss_mqar < 0.95 * math.log(split_vocabulary(mqar_vocab)[1])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.summarize:
        print(summarize(args.summarize, args.niah_lengths))
        return
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    environment = {"device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
                   "torch": torch.__version__, "seed": args.seed}
    rows = []
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    call_start = time.perf_counter()
    for index, name in enumerate(args.models):
        budget_s = training_budget(args.budget_s, args.call_budget_s, time.perf_counter() - call_start,
                                   len(args.models) - index)
        row = run_model(name, args, device, budget_s) | environment
        print(f"{name}: {row['compile_s']} s compiling, {row['train_steps']} steps, {row['train_s']} s training, "
              f"{row['eval_s']} s eval", flush=True)
        with out.open("a") as file:
            file.write(json.dumps(row) + "\n")
        rows.append(row)
        if index == 0 and not (args.keep_going or args.smoke) and on_chance_plateau(row["loss_mqar"], args.mqar_vocab):
            print(f"stopping: {name}'s final MQAR loss {row['loss_mqar']} is on the chance plateau (ln of the "
                  "number of values); the other models would measure nothing. Give MQAR more tokens (--mqar-batch "
                  "128, --niah-batch 8) or an easier task (--mqar-kv, --mqar-vocab), or pass --keep-going.")
            break
    print(markdown_table(rows, args.niah_lengths))


if __name__ == "__main__":
    main()
