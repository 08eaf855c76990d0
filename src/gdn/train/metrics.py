"""Throughput and memory readings for the log line."""
from __future__ import annotations

import resource
import sys
import time

import torch


def peak_memory_gib(device: torch.device) -> float:
    """Peak allocated GPU memory on CUDA; peak resident set size of the process on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return max_rss / (2**30 if sys.platform == "darwin" else 2**20)


class ThroughputMeter:
    """Tokens per second over the interval since the last reading."""

    def __init__(self) -> None:
        self._tokens = 0
        self._start = time.perf_counter()

    def add(self, tokens: int) -> None:
        self._tokens += tokens

    def read(self) -> float:
        rate = self._tokens / max(time.perf_counter() - self._start, 1e-9)
        self.restart()
        return rate

    def restart(self) -> None:
        """Start a new interval (after an eval or a checkpoint, which are not training throughput)."""
        self._tokens, self._start = 0, time.perf_counter()
