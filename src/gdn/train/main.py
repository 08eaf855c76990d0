"""`gdn-train`: compose the Hydra config, build data, model and optimizer, train, track in MLflow.

    gdn-train                                   # the default: GDN on MQAR, CPU-sized
    gdn-train model=transformer optim.optimizer.lr=1e-3
    gdn-train -m model=gdn,gdn_h1,transformer   # a multirun sweep
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

from gdn.train import checkpoint as ckpt
from gdn.train.cli import check_group_overrides
from gdn.train.optim import build_optimizer
from gdn.train.trainer import NonFiniteLossError, Trainer, TrainerSettings, TrainResult
from gdn.train.tracking import MlflowTracker, NullTracker, flatten, git_state, resolve_tracking_uri

REPO_ROOT = Path(__file__).resolve().parents[3]
CONF_DIR = REPO_ROOT / "conf"


def register_resolvers() -> None:
    # ${gdn.abspath:path}: absolute, relative to the directory the run was started from (the cwd never changes).
    OmegaConf.register_new_resolver("gdn.abspath", lambda p: str(Path(p).expanduser().resolve()), replace=True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_tracker(cfg: DictConfig, run_id: str | None, tags: dict[str, str]):
    if not cfg.logging.enabled:
        return NullTracker()
    uri = resolve_tracking_uri(cfg.logging.tracking_uri, cfg.paths.output_root)
    return MlflowTracker(uri, cfg.logging.experiment_name, cfg.logging.run_name, run_id=run_id, tags=tags)


def run(cfg: DictConfig, run_dir: Path, overrides: list[str] | None = None,
        choices: dict[str, str] | None = None) -> TrainResult:
    """Train one configuration; everything it writes goes under `run_dir` and the MLflow store."""
    overrides, choices = list(overrides or []), dict(choices or {})
    settings = TrainerSettings(**OmegaConf.to_container(cfg.trainer, resolve=True))
    device = settings.torch_device()
    seed_everything(cfg.seed)
    data = instantiate(cfg.data, _convert_="all")
    model = instantiate(cfg.model, vocab_size=data.vocab_size, _convert_="all").to(device)
    optimizer = build_optimizer(model, instantiate(cfg.optim.optimizer, _convert_="all"), cfg.optim.decay_embeddings)
    schedule = instantiate(cfg.sched)

    checkpoint_dir = run_dir / "checkpoints"
    resume_path = ckpt.resolve_checkpoint(settings.resume, checkpoint_dir)
    resume_state = ckpt.load_checkpoint(resume_path) if resume_path else None

    tags = {**git_state(REPO_ROOT), "model": choices.get("model", "custom"), "data": choices.get("data", "custom"),
            "overrides": " ".join(overrides)[:5000], "run_dir": str(run_dir)}
    tracker = build_tracker(cfg, resume_state["mlflow_run_id"] if resume_state else None, tags)
    trainer = Trainer(model, data, optimizer, schedule, settings, tracker, checkpoint_dir)
    if resume_state:
        trainer.load_state_dict(resume_state)
        print(f"resumed from {resume_path} at step {trainer.step}")

    num_params = sum(p.numel() for p in model.parameters())
    tracker.log_params({**flatten(OmegaConf.to_container(cfg, resolve=True)), "num_parameters": num_params})
    tracker.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config/resolved.yaml")
    tracker.log_text("\n".join(overrides) + "\n", "config/overrides.txt")
    print(f"model: {num_params:,} parameters on {device}; run dir {run_dir}")

    try:
        result = trainer.fit()
    except BaseException:
        tracker.finish("FAILED" if sys.exc_info()[0] is not KeyboardInterrupt else "KILLED")
        raise
    tracker.finish()
    accuracy = result.eval_metrics.get("eval/accuracy", float("nan"))
    print(f"final eval accuracy {accuracy:.4f}, eval loss {result.eval_metrics.get('eval/loss', float('nan')):.4f}; "
          f"MLflow run id {tracker.run_id} at {tracker.tracking_uri}")
    return result


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def hydra_entry(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    try:
        result = run(cfg, Path(hydra_cfg.runtime.output_dir), list(hydra_cfg.overrides.task),
                     dict(hydra_cfg.runtime.choices))
    except NonFiniteLossError as error:
        print(f"error: {error}", file=sys.stderr)
        if hydra_cfg.mode == RunMode.MULTIRUN:
            return None  # this job failed and is marked so in MLflow; the sweep goes on
        raise SystemExit(1) from None
    return result.eval_metrics.get("eval/loss")


def main() -> None:
    error = check_group_overrides(sys.argv[1:], CONF_DIR)
    if error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2)
    register_resolvers()
    hydra_entry()


if __name__ == "__main__":
    main()
