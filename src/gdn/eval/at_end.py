"""gdn-train's eval.at_end hook, and the printed report both it and gdn-eval use."""
from __future__ import annotations

import torch
import torch.distributed as dist
from omegaconf import DictConfig

from gdn.eval.suite import SuiteResult, run_suite
from gdn.eval.table import format_tables
from gdn.eval.tracking import metric_name


def report(result: SuiteResult, header: str) -> None:
    print(header)
    print(format_tables(result.metrics))
    for note in result.notes:
        print(f"note: {note}")


def evaluate_at_end(model: torch.nn.Module, cfg: DictConfig, data, tracker, step: int) -> SuiteResult | None:
    """gdn-train's eval.at_end: the suite on the trained model in memory, logged into the training run."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        # The model is sharded over the ranks; the suite runs in one process on a whole model.
        if dist.get_rank() == 0:
            print("note: eval.at_end runs in single-process training only; evaluate this run's checkpoint with "
                  "gdn-eval RUN_DIR")
        return None
    result = run_suite(model, cfg, cfg.eval, getattr(data, "tokenizer", None), data)
    report(result, f"evaluation at the end of training (step {step})")
    tracker.log_metrics({metric_name(k): v for k, v in result.metrics.items()}, step=step)
    return result
