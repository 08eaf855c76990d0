"""Data pipeline figures on this machine's CPUs: gdn-prepare-data throughput and peak memory, TokenData loader speed.

    nice python benchmarks/bench_data.py --sizes-mb 250 1000 --num-proc 2 --work /tmp/bench_data

For each size: generates a corpus of random words (the vocabulary is every word of this repository's README, docs
and sources) as jsonl files, prepares it with a tokenizer trained once (32768 tokens, on the first 32 MB of the
smallest corpus, not timed) and --num-proc processes, sampling the summed RSS of the preparing process and its
workers every 0.1 s, and the CPU seconds they used. Then reads 8 x 4096 batches from the prepared data in one process
pinned to one core.
Prints one JSON line per result and a Markdown table at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
FILE_MB = 64  # corpus files of this size


def vocabulary() -> list[str]:
    words = set()
    for path in [REPO / "README.md", *REPO.glob("docs/*.md"), *REPO.glob("src/gdn/**/*.py")]:
        words.update(re.findall(r"[A-Za-z]{2,}", path.read_text(errors="ignore")))
    return sorted(words)


def generate_corpus(folder: Path, size_mb: int, seed: int = 0) -> Path:
    """jsonl files of documents of 20-2000 random words, FILE_MB each, size_mb in all (reused when present)."""
    done = folder / "COMPLETE"
    if done.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng, words = random.Random(seed), vocabulary()
    written, part = 0, 0
    while written < size_mb << 20:
        with open(folder / f"part-{part:04d}.jsonl", "w") as f:
            in_file = 0
            while in_file < FILE_MB << 20 and written + in_file < size_mb << 20:
                text = " ".join(rng.choices(words, k=rng.randint(20, 2000)))
                line = json.dumps({"text": text}) + "\n"
                f.write(line)
                in_file += len(line)
        written += in_file
        part += 1
    done.write_text("")
    return folder


def train_tokenizer(corpus: Path, path: Path) -> None:
    """The byte-level BPE of gdn-prepare-data's own training (32768 tokens), on the corpus' first 32 MB."""
    from gdn.data import prepare, sources
    from gdn.data.tokenizer import train_bpe_tokenizer

    sample = prepare._sample(sources.stream_documents(str(corpus)), 32 << 20)
    path.parent.mkdir(parents=True, exist_ok=True)
    train_bpe_tokenizer(prepare._batched(sample, 1024), 32768).save(str(path))


def peak_rss_of(command: list[str], max_seconds: float | None = None) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak summed RSS in bytes of the process and its children) of running `command`.
    CPU seconds count the process and its waited-for descendants (the tokenising pool): on a shared machine,
    tokens per CPU second is the per-process rate that wall time hides. After max_seconds the command gets SIGINT
    (gdn-prepare-data stops its pool and exits; a rerun would resume)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    process = psutil.Popen(command)
    peak, stop = 0, threading.Event()

    def sample():
        nonlocal peak
        while not stop.is_set():
            try:
                tree = [process, *process.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    started = time.perf_counter()
    sampler.start()
    try:
        code = process.wait(timeout=max_seconds)
    except psutil.TimeoutExpired:
        process.send_signal(signal.SIGINT)
        code = process.wait()
    if code != 0 and max_seconds is None:
        raise RuntimeError(f"{command} failed")
    stop.set()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return time.perf_counter() - started, cpu, peak


def reader_rate(corpus: Path) -> float:
    """Characters of text per CPU second that gdn-prepare-data's one reading process streams from the corpus (the
    documents it hands to the tokenising processes): the bound on a many-core node, where it is the one reader."""
    from gdn.data import sources

    started, characters = time.process_time(), 0
    for text in sources.stream_documents(str(corpus)):
        characters += len(text)
    return characters / (time.process_time() - started)


def tokens_written(out: Path) -> int:
    """Tokens in the finished shards and the one being written (uint16: 2 bytes a token)."""
    finished = sum(json.loads(p.read_text())["tokens"] for p in out.glob("shard-*.json"))
    return finished + sum(p.stat().st_size for p in out.glob("shard-*.bin.tmp")) // 2


def loader_throughput(prepared: Path, steps: int) -> float:
    """Tokens/s of TokenData.train_batch(i) for 8 x 4096 batches, in this process pinned to one core."""
    import torch

    from gdn.data import TokenData

    cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cores)})
    torch.set_num_threads(1)
    try:
        data = TokenData(str(prepared), seq_len=4096, batch_size=8)
        data.train_batch(0)
        started = time.perf_counter()
        for index in range(1, steps + 1):
            data.train_batch(index * 7919 % (data.batches_per_epoch * 4))
        return steps * 8 * 4096 / (time.perf_counter() - started)
    finally:
        os.sched_setaffinity(0, cores)  # the next preparation gets every core again


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes-mb", type=int, nargs="+", default=[250, 1000])
    parser.add_argument("--num-proc", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_data"))
    parser.add_argument("--loader-steps", type=int, default=200)
    parser.add_argument("--max-seconds", type=float, help="stop each preparation after this long (then measure the "
                        "tokens written so far; the loader reads its finished shards)")
    args = parser.parse_args()
    env_python = [sys.executable, "-m", "gdn.data.prepare_cli"]
    tokenizer = args.work / "tokenizer" / "tokenizer.json"
    rows = []
    for size in args.sizes_mb:
        corpus = generate_corpus(args.work / f"corpus-{size}mb", size)
        if not tokenizer.exists():
            train_tokenizer(corpus, tokenizer)
        out = args.work / f"tokens-{size}mb-np{args.num_proc}"
        subprocess.run(["rm", "-rf", str(out)], check=True)
        seconds, cpu, peak = peak_rss_of([*env_python, str(corpus), str(out), "--tokenizer", str(tokenizer),
                                           "--num-proc", str(args.num_proc), "--no-progress"], args.max_seconds)
        tokens = tokens_written(out)
        rate = tokens / seconds
        row = {"corpus_mb": size, "num_proc": args.num_proc, "tokens": tokens,
               "finished": (out / "manifest.json").is_file(),
               "seconds": round(seconds, 1), "mtok_s": round(rate / 1e6, 3),
               "mtok_s_per_proc": round(rate / 1e6 / args.num_proc, 3), "cpu_s": round(cpu, 1),
               "mtok_per_cpu_s": round(tokens / cpu / 1e6, 3), "peak_rss_gb": round(peak / 2**30, 3),
               "loader_mtok_s_1core": (round(loader_throughput(out, args.loader_steps) / 1e6, 2)
                                       if (out / "manifest.json").is_file() else None)}
        row["reader_mchars_per_cpu_s"] = round(reader_rate(corpus) / 1e6, 1)
        print(json.dumps(row), flush=True)
        rows.append(row)
    print("| corpus | tokens (finished?) | prepare wall (s) | M tokens/s | per process | CPU s | M tokens per CPU s "
          "| peak RSS | loader, 1 core (8 x 4096) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        state = "finished" if r["finished"] else "stopped"
        print(f"| {r['corpus_mb']} MB | {r['tokens'] / 1e6:.1f}M ({state}) | {r['seconds']} | {r['mtok_s']} | "
              f"{r['mtok_s_per_proc']} | {r['cpu_s']} | {r['mtok_per_cpu_s']} | {r['peak_rss_gb']} GB | "
              f"{r['loader_mtok_s_1core']}M tokens/s |")


if __name__ == "__main__":
    main()
