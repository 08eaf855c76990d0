"""The single-process training loop: micro-batches -> loss / valid tokens -> clip -> step -> log / eval / checkpoint."""
from __future__ import annotations

import contextlib
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from gdn.train import checkpoint as ckpt
from gdn.train.loss import count_correct, summed_cross_entropy
from gdn.train.metrics import ThroughputMeter, peak_memory_gib


class NonFiniteLossError(RuntimeError):
    """Training stopped on a non-finite loss or gradient; the last good state was checkpointed."""


@dataclass
class TrainerSettings:
    max_steps: int
    stop_after_steps: int | None = None
    grad_accum: int = 1
    grad_clip: float | None = 1.0
    device: str = "auto"
    precision: str = "auto"
    log_every: int = 10
    eval_every: int = 200
    checkpoint_every: int = 200
    resume: str | None = None
    nan_policy: str = "stop"
    max_nan_skips: int = 10
    progress_bar: bool = True

    def __post_init__(self) -> None:
        if self.nan_policy not in ("stop", "skip"):
            raise ValueError(f"trainer.nan_policy={self.nan_policy!r}: choose stop or skip")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"trainer.precision={self.precision!r}: choose auto, fp32 or bf16")

    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)  # train loss of every step this process ran
    eval_metrics: dict[str, float] = field(default_factory=dict)
    step: int = 0
    tokens_seen: int = 0
    checkpoint: Path | None = None


class Trainer:
    def __init__(self, model: nn.Module, data: Any, optimizer: torch.optim.Optimizer, schedule: Any,
                 settings: TrainerSettings, tracker: Any, checkpoint_dir: Path):
        self.settings = settings
        self.device = settings.torch_device()
        self.model = model.to(self.device)
        self.data = data
        self.optimizer = optimizer
        self.schedule = schedule
        self.tracker = tracker
        self.checkpoint_dir = checkpoint_dir
        self.peak_lrs = [group["lr"] for group in optimizer.param_groups]
        self.step = 0
        self.tokens_seen = 0
        self.nan_skips = 0

    # -- state ------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "nan_skips": self.nan_skips,
            "data_position": self.step * self.settings.grad_accum,  # the next micro-batch index
            "rng": ckpt.capture_rng_state(),
            "mlflow_run_id": self.tracker.run_id,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.tokens_seen, self.nan_skips = state["step"], state["tokens_seen"], state["nan_skips"]
        ckpt.restore_rng_state(state["rng"])

    def save(self) -> Path:
        return ckpt.save_checkpoint(self.checkpoint_dir, self.step, self.state_dict())

    # -- steps ------------------------------------------------------------------------------------------------
    def _autocast(self):
        bf16 = self.settings.precision == "bf16" or (self.settings.precision == "auto" and self.device.type == "cuda")
        if bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _set_learning_rate(self) -> float:
        factor = self.schedule(self.step, self.settings.max_steps)
        for group, peak in zip(self.optimizer.param_groups, self.peak_lrs):
            group["lr"] = peak * factor
        return self.peak_lrs[0] * factor

    def train_step(self) -> tuple[float, float]:
        """One optimizer step over grad_accum micro-batches; returns (loss, grad norm).
        The loss is sum over valid tokens / valid tokens of the whole step, so micro-batches weigh per token."""
        first = self.step * self.settings.grad_accum
        batches = [self.data.train_batch(first + i).to(self.device) for i in range(self.settings.grad_accum)]
        valid_tokens = sum(b.num_valid_tokens for b in batches)
        loss_total = torch.zeros((), device=self.device)
        for batch in batches:
            with self._autocast():
                logits = self.model(batch.input_ids, cu_seqlens=batch.cu_seqlens)
            loss = summed_cross_entropy(logits, batch.labels) / max(valid_tokens, 1)
            loss.backward()
            loss_total += loss.detach()
            self.tokens_seen += batch.input_ids.numel()
        clip = self.settings.grad_clip if self.settings.grad_clip else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        loss_value, norm_value = loss_total.item(), grad_norm.item()
        if math.isfinite(loss_value) and math.isfinite(norm_value):
            self.optimizer.step()
        else:
            self._on_non_finite(loss_value, norm_value)
        self.optimizer.zero_grad(set_to_none=True)
        return loss_value, norm_value

    def _on_non_finite(self, loss: float, grad_norm: float) -> None:
        """No update is applied. skip: count it and go on; stop (or too many skips): checkpoint and raise."""
        what = f"non-finite {'loss' if not math.isfinite(loss) else 'gradient norm'} at step {self.step + 1} " \
               f"(loss {loss}, grad norm {grad_norm})"
        self.nan_skips += 1
        if self.settings.nan_policy == "skip" and self.nan_skips <= self.settings.max_nan_skips:
            tqdm.write(f"warning: {what}: step skipped ({self.nan_skips}/{self.settings.max_nan_skips})",
                       file=sys.stderr)
            return
        self.optimizer.zero_grad(set_to_none=True)
        path = self.save()
        reason = "too many skipped steps; " if self.settings.nan_policy == "skip" else ""
        raise NonFiniteLossError(
            f"{what}: {reason}stopped; last good state saved to {path}. Lower optim.optimizer.lr or "
            f"trainer.grad_clip, or set trainer.nan_policy=skip"
        )

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Loss and arg-max accuracy over the valid positions of the fixed eval set (MQAR: query accuracy)."""
        self.model.eval()
        loss_sum, correct, valid = 0.0, 0, 0
        for batch in self.data.eval_batches():
            batch = batch.to(self.device)
            with self._autocast():
                logits = self.model(batch.input_ids, cu_seqlens=batch.cu_seqlens)
            loss_sum += summed_cross_entropy(logits, batch.labels).item()
            correct += count_correct(logits, batch.labels)
            valid += batch.num_valid_tokens
        self.model.train()
        return {"eval/loss": loss_sum / max(valid, 1), "eval/accuracy": correct / max(valid, 1)}

    # -- loop -------------------------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        s = self.settings
        result = TrainResult()
        last_step = min(s.max_steps, s.stop_after_steps or s.max_steps)
        meter = ThroughputMeter()
        interval_losses: list[float] = []
        bar = tqdm(total=last_step, initial=self.step, disable=not s.progress_bar, desc="train", dynamic_ncols=True)
        self.model.train()
        while self.step < last_step:
            tokens_before = self.tokens_seen
            lr = self._set_learning_rate()
            loss, grad_norm = self.train_step()
            self.step += 1
            meter.add(self.tokens_seen - tokens_before)
            result.losses.append(loss)
            interval_losses.append(loss)
            bar.update(1)
            if self.step % s.log_every == 0 or self.step == last_step:
                tokens_per_s = meter.read()
                mean_loss = sum(interval_losses) / len(interval_losses)
                interval_losses.clear()
                bar.set_postfix(loss=f"{mean_loss:.4f}", tok_s=f"{tokens_per_s:,.0f}")
                self.tracker.log_metrics({
                    "train/loss": mean_loss, "train/lr": lr, "train/grad_norm": grad_norm,
                    "train/tokens_per_s": tokens_per_s, "train/tokens_seen": self.tokens_seen,
                    "system/peak_memory_gib": peak_memory_gib(self.device),
                }, step=self.step)
            if self.step % s.eval_every == 0 or self.step == last_step:
                result.eval_metrics = self.evaluate()
                self.tracker.log_metrics({**result.eval_metrics, "train/tokens_seen": self.tokens_seen},
                                         step=self.step)
                bar.write(f"step {self.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in result.eval_metrics.items()))
                meter.restart()
            if self.step % s.checkpoint_every == 0 or self.step == last_step:
                result.checkpoint = self.save()
                meter.restart()
        bar.close()
        result.step, result.tokens_seen = self.step, self.tokens_seen
        return result
