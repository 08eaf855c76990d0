"""`gdn-train`: compose the Hydra config, build data, model and optimizer, train, track in MLflow.

    gdn-train                                   # the default: GDN on MQAR, CPU-sized
    gdn-train model=transformer optim.optimizer.lr=1e-3
    gdn-train -m model=gdn,gdn_h1,transformer   # a multirun sweep
    torchrun --nproc_per_node=8 -m gdn.train ...  # FSDP2 over 8 GPUs (gdn.train.launch: one run folder for all ranks)
"""
from __future__ import annotations

import random
import sys
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from gdn.config import CONF_DIR, check_group_overrides, missing_scale_size, register_resolvers
from gdn.config.checks import ConfigValueError, check_config
from gdn.config.paths import source_checkout
from gdn.dashboard.run_names import run_name
from gdn.eval.at_end import evaluate_at_end
from gdn.run_folder import write_run_files
from gdn.sweep.failed_job import fail_sweep_job
from gdn.sweep.parent import current_sweep_parent
from gdn.train import checkpoint as ckpt
from gdn.train import distributed as dist_utils
from gdn.train.checkpoint import CheckpointSaveError
from gdn.train.checkpoint_record import DamagedCheckpointError
from gdn.train.launch import prepare_launch
from gdn.train.optim import build_optimizer
from gdn.train.parallelize import DTYPES, parallelize
from gdn.train.trainer import NonFiniteLossError, Trainer, TrainerSettings, TrainResult
from gdn.train.tracking import MlflowTracker, NullTracker, flatten, git_state, resolve_tracking_uri, run_tags

def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_tracker(cfg: DictConfig, run_id: str | None, tags: dict[str, str], overrides: list[str],
                  system_metrics: bool = False):
    """The run is named `logging.run_name`, else after its architecture and overrides (gdn.dashboard.run_names)."""
    if not cfg.logging.enabled or not dist_utils.is_main_process():
        return NullTracker()  # only rank 0 talks to MLflow
    if system_metrics:
        import mlflow  # CPU/GPU/memory/network sampled by MLflow in a thread (needs psutil; GPUs: nvidia-ml-py)

        mlflow.enable_system_metrics_logging()
    parent = current_sweep_parent()
    if parent is not None:  # a sweep's job: a child of the sweep's parent run, in the parent's experiment
        name = cfg.logging.run_name or parent.child_run_name(tags["architecture"], overrides)
        return MlflowTracker(parent.tracking_uri, cfg.logging.experiment_name, name, run_id=run_id,
                             tags={**tags, **parent.child_tags()}, parent_run_id=parent.run_id,
                             experiment_id=parent.experiment_id)
    uri = resolve_tracking_uri(cfg.logging.tracking_uri, cfg.paths.output_root)
    name = cfg.logging.run_name or run_name(tags["architecture"], overrides)
    return MlflowTracker(uri, cfg.logging.experiment_name, name, run_id=run_id, tags=tags)


def run(cfg: DictConfig, run_dir: Path, overrides: list[str] | None = None,
        choices: dict[str, str] | None = None) -> TrainResult:
    """Train one configuration; everything it writes goes under `run_dir` and the MLflow store.
    Under torchrun or Slurm every rank calls this; the process group is joined here unless the caller did."""
    overrides, choices = list(overrides or []), dict(choices or {})
    check_config(cfg)  # one line for a value that cannot work, before anything is built
    settings = TrainerSettings(**OmegaConf.to_container(cfg.trainer, resolve=True))
    device = settings.torch_device()
    owns_group = dist_utils.init_process_group(device.type)
    try:
        return _train(cfg, settings, device, run_dir, overrides, choices)
    finally:
        if owns_group:
            dist_utils.destroy_process_group()


def _train(cfg: DictConfig, settings: TrainerSettings, device: torch.device, run_dir: Path, overrides: list[str],
           choices: dict[str, str]) -> TrainResult:
    dims = dist_utils.ParallelDims.from_config(settings.parallel.dp_replicate, settings.parallel.dp_shard,
                                               dist_utils.world_size())
    main_process = dist_utils.is_main_process()
    seed_everything(cfg.seed)  # the same seed on every rank: identical initial weights before sharding
    data = instantiate(cfg.data, _convert_="all")
    model = instantiate(cfg.model, vocab_size=data.vocab_size, _convert_="all")
    model = model.to(device, DTYPES[settings.weights_dtype])
    num_params = sum(p.numel() for p in model.parameters())
    flops_per_token = count_training_flops(model, getattr(data, "seq_len", None))
    model = parallelize(model, settings.parallel, device, dims.build_mesh(device.type))
    optimizer = build_optimizer(model, instantiate(cfg.optim.optimizer, _convert_="all"), cfg.optim.decay_embeddings)
    schedule = instantiate(cfg.sched)

    checkpoint_dir = run_dir / "checkpoints"
    resume = ckpt.resume_point(settings.resume, checkpoint_dir)  # damaged checkpoints: passed over or one line
    resume_path = resume.path
    resume_run_id = ckpt.read_trainer_state(resume_path)["mlflow_run_id"] if resume_path else None

    tags = {**git_state(source_checkout() or Path.cwd()),  # an installed wheel: the repo of the cwd, if any
            "model": choices.get("model", "custom"), "data": choices.get("data", "custom"),
            **run_tags(choices, cfg.seed, overrides), "run_dir": str(run_dir), "world_size": str(dims.world_size)}
    tracker = build_tracker(cfg, resume_run_id, tags, overrides, settings.system_metrics)
    trainer = Trainer(model, data, optimizer, schedule, settings, tracker, checkpoint_dir, flops_per_token)
    if resume.skipped:
        skipped = ", ".join(resume.skipped)
        dist_utils.warn_once_on_main(f"trainer.resume=auto: passed over damaged checkpoint(s) {skipped}; resuming "
                                     f"from {resume_path.name}")
        tracker.set_tag("resume_skipped_damaged", skipped[:5000])
    if resume_path:
        trainer.load(resume_path)
        if main_process:
            print(f"resumed from {resume_path} at step {trainer.step}")

    tracker.log_params({**flatten(OmegaConf.to_container(cfg, resolve=True)), "num_parameters": num_params})
    tracker.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config/resolved.yaml")
    tracker.log_text("\n".join(overrides) + "\n", "config/overrides.txt")
    if main_process:
        write_run_files(run_dir, cfg, data)  # the resolved config and tokenizer that gdn-eval / gdn-generate read
        print(f"model: {num_params:,} parameters on {dims.world_size} x {device.type} "
              f"(dp_replicate {dims.dp_replicate} x dp_shard {dims.dp_shard}); run dir {run_dir}")

    try:
        result = trainer.fit()
        if cfg.eval.at_end and not result.preempted:
            evaluate_at_end(trainer.model, cfg, data, tracker, result.step)
    except BaseException:
        tracker.finish("FAILED" if sys.exc_info()[0] is not KeyboardInterrupt else "KILLED")
        raise
    tracker.finish("KILLED" if result.preempted else "FINISHED")
    if settings.export_safetensors and main_process and result.checkpoint:
        from gdn.train.export import export_safetensors

        print(f"exported the weights to {export_safetensors(result.checkpoint, run_dir / 'model.safetensors')}")
    if main_process:
        accuracy = result.eval_metrics.get("eval/accuracy", float("nan"))
        print(f"final eval accuracy {accuracy:.4f}, eval loss "
              f"{result.eval_metrics.get('eval/loss', float('nan')):.4f}; "
              f"MLflow run id {tracker.run_id} at {tracker.tracking_uri}")
    return result


def count_training_flops(model: torch.nn.Module, seq_len: int | None) -> int | None:
    """Training FLOPs per token for MFU (gdn.models.flops); None when a mixer has no count or the data module
    has no fixed sequence length."""
    from gdn.models.flops import UnknownMixerError, training_flops_per_token

    if seq_len is None:
        return None
    try:
        return training_flops_per_token(model, seq_len)
    except UnknownMixerError:
        return None


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def hydra_entry(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    scale_error = missing_scale_size(hydra_cfg.runtime.choices)
    if scale_error:
        print(f"error: {scale_error}", file=sys.stderr)
        raise SystemExit(2)
    try:
        result = run(cfg, Path(hydra_cfg.runtime.output_dir), list(hydra_cfg.overrides.task),
                     dict(hydra_cfg.runtime.choices))
    except Exception as error:
        if hydra_cfg.mode == RunMode.MULTIRUN:
            return fail_sweep_job(cfg)  # a FAILED child run holds the error; the sweep goes on
        if isinstance(error, (NonFiniteLossError, ConfigValueError, DamagedCheckpointError, CheckpointSaveError)):
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(1) from None
        raise
    return result.eval_metrics.get("eval/loss")


def main() -> None:
    error = check_group_overrides(sys.argv[1:])
    if error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2)
    register_resolvers()
    with prepare_launch():
        hydra_entry()


if __name__ == "__main__":
    main()
