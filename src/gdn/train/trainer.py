"""The training loop, one process or many (FSDP2): global micro-batches -> this rank's rows -> loss / GLOBAL valid
tokens -> clip -> step -> log (rank 0) / eval / DCP checkpoint; SIGTERM saves and stops cleanly."""
from __future__ import annotations

import contextlib
import math
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.distributed.tensor import DTensor
from tqdm.auto import tqdm

from gdn.train import distributed as dist_utils
from gdn.train.checkpoint import CheckpointManager, CheckpointSaveError, restore_rng_state
from gdn.train.loss import ChunkedLossHead, count_correct, summed_cross_entropy
from gdn.train.metrics import ThroughputMeter, bf16_peak_flops, memory_metrics
from gdn.train.non_finite import describe_non_finite
from gdn.train.parallelize import ParallelSettings
from gdn.train.prefetch import BatchPrefetcher
from gdn.train.sharding import rank_batch


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
    weights_dtype: str = "fp32"
    log_every: int = 10
    eval_every: int = 200
    checkpoint_every: int = 200
    resume: str | None = None
    nan_policy: str = "stop"
    max_nan_skips: int = 10
    on_save_error: str = "continue"
    progress_bar: bool = True
    keep_checkpoints: int = 2
    async_checkpoint: bool = False
    export_safetensors: bool = False
    loss_chunk_tokens: int | None = None
    system_metrics: bool = False
    parallel: ParallelSettings = field(default_factory=ParallelSettings)

    def __post_init__(self) -> None:
        if self.nan_policy not in ("stop", "skip"):
            raise ValueError(f"trainer.nan_policy={self.nan_policy!r}: choose stop or skip")
        if self.on_save_error not in ("continue", "stop"):
            raise ValueError(f"trainer.on_save_error={self.on_save_error!r}: choose continue or stop")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"trainer.precision={self.precision!r}: choose auto, fp32 or bf16")
        if self.weights_dtype not in ("fp32", "bf16"):
            raise ValueError(f"trainer.weights_dtype={self.weights_dtype!r}: choose fp32 or bf16")
        if self.loss_chunk_tokens is not None and self.loss_chunk_tokens < 1:
            raise ValueError(f"trainer.loss_chunk_tokens={self.loss_chunk_tokens}: a positive token count or null")
        if not isinstance(self.parallel, ParallelSettings):  # a dict or DictConfig from the config
            self.parallel = ParallelSettings(**self.parallel)

    def torch_device(self) -> torch.device:
        return dist_utils.local_device(self.device)


@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)  # train loss of every step this process ran
    grad_norms: list[float] = field(default_factory=list)  # global gradient norm (before clipping) of each step
    eval_metrics: dict[str, float] = field(default_factory=dict)
    step: int = 0
    tokens_seen: int = 0
    checkpoint: Path | None = None  # the last checkpoint this run completed (None if every save failed)
    preempted: bool = False  # stopped by SIGTERM (checkpoint saved)
    failed_saves: list[int] = field(default_factory=list)  # steps whose save failed (trainer.on_save_error=continue)


class Trainer:
    def __init__(self, model: nn.Module, data: Any, optimizer: torch.optim.Optimizer, schedule: Any,
                 settings: TrainerSettings, tracker: Any, checkpoint_dir: Path,
                 training_flops_per_token: int | None = None):
        self.settings = settings
        self.device = settings.torch_device()
        self.model = model.to(self.device)
        self.data = data
        self.optimizer = optimizer
        self.schedule = schedule
        self.tracker = tracker
        self.checkpoints = CheckpointManager(checkpoint_dir, settings.keep_checkpoints, settings.async_checkpoint)
        self.rank, self.world_size = dist_utils.rank(), dist_utils.world_size()
        self.training_flops_per_token = training_flops_per_token
        self.peak_lrs = [group["lr"] for group in optimizer.param_groups]
        self.step = 0
        self.tokens_seen = 0
        self.nan_skips = 0
        self.data_position = 0  # index of the next global micro-batch
        self.failed_saves: list[int] = []
        self._sigterm = False
        # starts its thread on the first step; fit closes it at the end
        self._batches = BatchPrefetcher(self._host_batches, pin_memory=self.device.type == "cuda")

    # -- state ------------------------------------------------------------------------------------------------
    def trainer_state(self) -> dict[str, Any]:
        """Everything but model, optimizer and RNG (the CheckpointManager writes those); the schedule is a
        function of the step."""
        return {
            "step": self.step, "tokens_seen": self.tokens_seen, "nan_skips": self.nan_skips,
            "data_position": self.data_position, "global_batch_size": self.data.batch_size,
            "grad_accum": self.settings.grad_accum, "world_size": self.world_size,
            "mlflow_run_id": self.tracker.run_id,
        }

    def save(self) -> Path | None:
        """Checkpoint this step; None when the save failed and trainer.on_save_error=continue (the failure is
        logged and tagged, `latest` still names the previous checkpoint, the next interval tries again). An
        asynchronous save's failure is reported when the next save waits for it, or at the end."""
        self.wait_for_checkpoint()
        try:
            return self.checkpoints.save(self.step, self.model, self.optimizer, self.trainer_state())
        except CheckpointSaveError as error:
            self._on_save_error(error)
            return None

    def wait_for_checkpoint(self) -> None:
        """Finish an asynchronous save in flight (its failure handled as a failed save)."""
        try:
            self.checkpoints.wait()
        except CheckpointSaveError as error:
            self._on_save_error(error)

    def _on_save_error(self, error: CheckpointSaveError) -> None:
        """Log and tag a failed save; with trainer.on_save_error=stop raise it as the run's error."""
        self.failed_saves.append(error.step)
        stop = self.settings.on_save_error == "stop"
        self.tracker.set_tag("checkpoint_save_failed", f"step {error.step}: {error.reason}"[:5000])
        if self.rank == 0:
            then = "stopping (trainer.on_save_error=stop)" if stop else "training goes on; the next checkpoint " \
                   "interval saves again"
            tqdm.write(f"warning: {error}; {then}", file=sys.stderr)
        if stop:
            raise error

    def load(self, step_dir: Path) -> dict[str, Any]:
        """Restore from a checkpoint written at any world size. The data position is a global micro-batch index,
        so it carries over to any world size; it is reset (with a warning) to step x grad_accum only when the
        global batch (data.batch_size or grad_accum) changed. RNG states carry over at the same world size."""
        state = self.checkpoints.load(step_dir, self.model, self.optimizer)
        self.step, self.tokens_seen, self.nan_skips = state["step"], state["tokens_seen"], state["nan_skips"]
        same_batches = (state["global_batch_size"], state["grad_accum"]) == (self.data.batch_size,
                                                                            self.settings.grad_accum)
        self.data_position = state["data_position"] if same_batches else self.step * self.settings.grad_accum
        if not same_batches:
            dist_utils.warn_once_on_main(
                f"checkpoint global batch {state['global_batch_size']} rows x {state['grad_accum']} micro-batches "
                f"differs from this run's {self.data.batch_size} x {self.settings.grad_accum}: the data position "
                f"cannot be carried over and restarts at micro-batch {self.data_position}")
        if state["rng"] is not None:
            restore_rng_state(state["rng"])
        else:
            dist_utils.warn_once_on_main(f"checkpoint written by {state['world_size']} ranks, resumed on "
                                         f"{self.world_size}: RNG states start fresh")
        return state

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

    def _summed_loss(self, batch) -> torch.Tensor:
        with self._autocast():
            if self.settings.loss_chunk_tokens:
                head = ChunkedLossHead(batch.labels, self.settings.loss_chunk_tokens,
                                       compiled=self.settings.parallel.compile_enabled(self.device))
                return self.model(batch.input_ids, cu_seqlens=batch.cu_seqlens, head=head)
            logits = self.model(batch.input_ids, cu_seqlens=batch.cu_seqlens)
        return summed_cross_entropy(logits, batch.labels)

    def train_step(self) -> tuple[float, float]:
        """One optimizer step over grad_accum global micro-batches; returns (loss, grad norm), both global.
        The loss is the sum over this rank's valid tokens / the valid tokens of the whole step on all ranks, so
        summing gradients over ranks (FSDP's division is off) gives the gradient of the global mean."""
        # Nothing here waits for the GPU (a wait would count the previous step's optimizer as data time and
        # stall the queue): the valid tokens are counted on the host batches, and their global sum stays a
        # device tensor that the losses are divided by.
        self._data_wait = time.perf_counter()
        host_batches = self._batches.get(self.data_position)
        valid = torch.full((), float(sum(b.num_valid_tokens for b in host_batches)), device=self.device)
        valid_tokens = dist_utils.all_reduce_sum(valid).clamp_min(1.0)
        batches = [b.to(self.device, non_blocking=True) for b in host_batches]
        self._data_wait = time.perf_counter() - self._data_wait
        loss_total = torch.zeros((), device=self.device)
        for batch in batches:
            loss = self._summed_loss(batch) / valid_tokens
            loss.backward()
            loss_total += loss.detach()
        # The norm first, the clipping only once it is known to be finite: a non-finite step keeps its gradients
        # as they came out of the backward pass for the diagnosis (clipping by a NaN norm would make them all NaN).
        params = [p for p in self.model.parameters() if p.grad is not None]
        total_norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        grad_norm = total_norm.full_tensor() if isinstance(total_norm, DTensor) else total_norm
        global_loss = dist_utils.all_reduce_sum(loss_total)
        self._batches.read_ahead(self.data_position + self.settings.grad_accum)  # while this thread waits below
        loss_value, norm_value = global_loss.item(), grad_norm.item()
        if math.isfinite(loss_value) and math.isfinite(norm_value):
            if self.settings.grad_clip:
                torch.nn.utils.clip_grads_with_norm_(params, self.settings.grad_clip, total_norm)
            self.optimizer.step()
        else:
            self._on_non_finite(loss_value, norm_value)  # raises unless the step is skipped
        self.optimizer.zero_grad(set_to_none=True)
        self.data_position += self.settings.grad_accum
        self.tokens_seen += self.world_size * sum(b.input_ids.numel() for b in batches)  # ranks hold equal rows
        return loss_value, norm_value

    def _host_batches(self, position: int) -> list:
        """This rank's rows of the step's grad_accum global micro-batches from data position `position` on."""
        return [rank_batch(self.data, position + i, self.rank, self.world_size)
                for i in range(self.settings.grad_accum)]

    def _on_non_finite(self, loss: float, grad_norm: float) -> None:
        """No update is applied. skip: count it and go on; stop (or too many skips): checkpoint and raise.
        Loss and grad norm are global, so every rank takes the same branch."""
        what = describe_non_finite(self.step + 1, loss, grad_norm, self.model)
        self.tracker.set_tag("non_finite", what[:5000])
        self.nan_skips += 1
        if self.settings.nan_policy == "skip" and self.nan_skips <= self.settings.max_nan_skips:
            if self.rank == 0:
                tqdm.write(f"warning: {what}: step skipped ({self.nan_skips}/{self.settings.max_nan_skips})",
                           file=sys.stderr)
            return
        self.optimizer.zero_grad(set_to_none=True)
        path = self.save()  # the state before the bad step
        self.wait_for_checkpoint()
        path = path if path == self.checkpoints.published else None
        saved = f"last good state saved to {path}" if path else \
            f"saving the last good state failed, the newest checkpoint is {self.checkpoints.published}"
        reason = "too many skipped steps; " if self.settings.nan_policy == "skip" else ""
        raise NonFiniteLossError(
            f"{what}: {reason}stopped; {saved}. Lower optim.optimizer.lr or "
            f"trainer.grad_clip, or set trainer.nan_policy=skip"
        )

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Loss and arg-max accuracy over the valid positions of the fixed eval set (MQAR: query accuracy).
        Every rank evaluates the whole set (FSDP needs every rank in every forward); the figures agree."""
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
    @contextlib.contextmanager
    def _sigterm_requests_stop(self):
        """SIGTERM (Slurm pre-emption, `kill`) only sets a flag; the loop saves and stops after the current step.
        Signal handlers can only be set from the main thread; elsewhere SIGTERM keeps its default."""
        def request_stop(signum, frame):
            self._sigterm = True

        try:
            previous = signal.signal(signal.SIGTERM, request_stop)
        except ValueError:
            yield
            return
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)

    def fit(self) -> TrainResult:
        s = self.settings
        result = TrainResult()
        last_step = min(s.max_steps, s.stop_after_steps or s.max_steps)
        meter = ThroughputMeter(self.world_size, self.training_flops_per_token, bf16_peak_flops(self.device))
        interval_losses: list[float] = []
        bar = tqdm(total=last_step, initial=self.step, disable=not s.progress_bar or self.rank != 0, desc="train",
                   dynamic_ncols=True)
        self.model.train()
        with self._sigterm_requests_stop(), contextlib.closing(self._batches):
            while self.step < last_step:
                tokens_before = self.tokens_seen
                lr = self._set_learning_rate()
                loss, grad_norm = self.train_step()
                self.step += 1
                meter.add(self.tokens_seen - tokens_before, self._data_wait)
                result.losses.append(loss)
                result.grad_norms.append(grad_norm)
                interval_losses.append(loss)
                bar.update(1)
                if self.step % s.log_every == 0 or self.step == last_step:
                    reading = meter.read()
                    mean_loss = sum(interval_losses) / len(interval_losses)
                    interval_losses.clear()
                    bar.set_postfix(loss=f"{mean_loss:.4f}", tok_s=f"{reading.tokens_per_s:,.0f}")
                    self.tracker.log_metrics({
                        "train/loss": mean_loss, "train/lr": lr, "train/grad_norm": grad_norm,
                        "train/tokens_seen": self.tokens_seen, **reading.as_metrics(), **memory_metrics(self.device),
                    }, step=self.step)
                if self.step % s.eval_every == 0 or self.step == last_step:
                    result.eval_metrics = self.evaluate()
                    self.tracker.log_metrics({**result.eval_metrics, "train/tokens_seen": self.tokens_seen},
                                             step=self.step)
                    if self.rank == 0:
                        bar.write(f"step {self.step}: "
                                  + ", ".join(f"{k} {v:.4f}" for k, v in result.eval_metrics.items()))
                    meter.restart()
                if self.step % s.checkpoint_every == 0 or self.step == last_step:
                    self.save()
                    meter.restart()
                if dist_utils.any_rank(self._sigterm, self.device):
                    saved, result.preempted = self.save(), True
                    if self.rank == 0:
                        bar.write(f"SIGTERM: {f'saved step {self.step} to {saved}' if saved else 'the save failed'}; "
                                  f"stopping")
                    break
        self.wait_for_checkpoint()
        bar.close()
        result.step, result.tokens_seen = self.step, self.tokens_seen
        result.checkpoint, result.failed_saves = self.checkpoints.published, list(self.failed_saves)
        return result
