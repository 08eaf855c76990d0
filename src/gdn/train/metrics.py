"""Throughput, MFU and memory readings for the log line.

MFU = achieved model FLOP/s per device / the device's dense bf16 peak, where achieved = tokens/s per device x
training FLOPs per token (gdn.models.flops: each mixer's own count, training = 3 x forward). Activation
checkpointing's recomputation is not counted (it is not model FLOPs), so MFU drops when AC is on.
"""
from __future__ import annotations

import resource
import sys
import time
from dataclasses import dataclass

import torch

# Dense bf16 tensor-core peaks (no sparsity), FLOP/s, from the vendors' data sheets. Matched in order against
# torch.cuda.get_device_name(), so the specific names come before the generic ones.
BF16_PEAK_FLOPS = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),       # H100 SXM ("NVIDIA H100 80GB HBM3")
    ("H200", 989e12),
    ("GH200", 989e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("A10G", 70e12),
)


def bf16_peak_flops(device: torch.device) -> float | None:
    """The device's dense bf16 peak in FLOP/s; None on the CPU or for a card not in the table (no MFU then)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in BF16_PEAK_FLOPS if key in name), None)


def peak_memory_gib(device: torch.device) -> float:
    """Peak allocated GPU memory on CUDA; peak resident set size of the process on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return max_rss / (2**30 if sys.platform == "darwin" else 2**20)


def memory_metrics(device: torch.device) -> dict[str, float]:
    metrics = {"system/peak_memory_gib": peak_memory_gib(device)}
    if device.type == "cuda":
        metrics["system/peak_reserved_memory_gib"] = torch.cuda.max_memory_reserved(device) / 2**30
    return metrics


@dataclass
class IntervalReading:
    tokens_per_s: float              # global: all ranks together
    tokens_per_s_per_device: float
    step_time_s: float               # mean wall time of one optimizer step
    data_wait_share: float           # fraction of the step time spent fetching and moving batches
    mfu: float | None                # None where the peak or the FLOP count is unknown (CPU, unknown card)

    def as_metrics(self) -> dict[str, float]:
        metrics = {"train/tokens_per_s": self.tokens_per_s, "train/tokens_per_s_per_device":
                   self.tokens_per_s_per_device, "train/step_time_s": self.step_time_s,
                   "train/data_wait_share": self.data_wait_share}
        if self.mfu is not None:
            metrics["train/mfu"] = self.mfu
        return metrics


class ThroughputMeter:
    """Tokens, steps and data-wait time over the interval since the last reading."""

    def __init__(self, world_size: int = 1, training_flops_per_token: int | None = None,
                 peak_flops: float | None = None) -> None:
        self.world_size = world_size
        self.flops_per_token = training_flops_per_token
        self.peak_flops = peak_flops
        self.restart()

    def add(self, tokens: int, data_wait_s: float = 0.0) -> None:
        """One optimizer step that trained `tokens` tokens (global) and waited `data_wait_s` for its data."""
        self._tokens += tokens
        self._steps += 1
        self._data_wait += data_wait_s

    def read(self) -> IntervalReading:
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        rate = self._tokens / elapsed
        per_device = rate / self.world_size
        mfu = None
        if self.flops_per_token and self.peak_flops:
            mfu = per_device * self.flops_per_token / self.peak_flops
        reading = IntervalReading(rate, per_device, elapsed / max(self._steps, 1), self._data_wait / elapsed, mfu)
        self.restart()
        return reading

    def restart(self) -> None:
        """Start a new interval (after an eval or a checkpoint, which are not training throughput)."""
        self._tokens, self._steps, self._data_wait, self._start = 0, 0, 0.0, time.perf_counter()
