"""The evaluation suite (conf/eval/): one function for gdn-eval and for gdn-train's eval.at_end.

Parts run where they apply: perplexity for every run, the MQAR grid for MQAR runs (it needs the run's toy
vocabulary), S-NIAH and lm-eval tasks for text runs (they need a text tokenizer). A skipped part leaves a note.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from gdn.eval.loading import TEXT_DATA_TARGETS
from gdn.eval.mqar_grid import mqar_grid
from gdn.eval.niah import niah_accuracy
from gdn.eval.perplexity import length_extrapolation

MQAR_DATA_TARGET = "gdn.data.MQARData"


@dataclass
class SuiteResult:
    metrics: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # why a part was skipped


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA (as training), full precision on the CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def run_suite(model: torch.nn.Module, run_config: DictConfig, eval_cfg: DictConfig, tokenizer=None,
              data=None) -> SuiteResult:
    """Evaluate `model` (trained with `run_config`) as `eval_cfg` asks. `data`: the run's data module when the
    caller has it (gdn-train at the end); otherwise it is built from run_config.data (text: from its cache)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    result = SuiteResult()
    target = run_config.data.get("_target_")
    try:
        with autocast_for(device):
            if eval_cfg.perplexity.enabled:
                data = data if data is not None else instantiate(run_config.data, _convert_="all")
                result.metrics |= length_extrapolation(model, run_config.data, data,
                                                       list(eval_cfg.perplexity.length_factors), device)
            if eval_cfg.mqar.enabled:
                _mqar(model, run_config, eval_cfg.mqar, target, device, result)
            if eval_cfg.niah.enabled:
                _niah(model, eval_cfg.niah, tokenizer, target, result)
            if eval_cfg.lm_eval_tasks:
                _lm_eval(model, run_config, eval_cfg, tokenizer, result)
    finally:
        model.train(was_training)
    return result


def _mqar(model, run_config, cfg, target, device, result: SuiteResult) -> None:
    if target != MQAR_DATA_TARGET:
        result.notes.append(f"MQAR grid skipped: it needs a model trained on MQAR's vocabulary (data: {target})")
        return
    result.metrics |= mqar_grid(model, vocab_size=run_config.data.vocab_size, kv_pairs=list(cfg.kv_pairs),
                                seq_lens=list(cfg.seq_lens), num_examples=cfg.num_examples,
                                batch_size=cfg.batch_size, seed=run_config.data.seed, device=device)


def _niah(model, cfg, tokenizer, target, result: SuiteResult) -> None:
    if tokenizer is None:
        result.notes.append(f"S-NIAH skipped: it needs a text tokenizer, and this run's data ({target}) has a toy "
                            f"vocabulary; the MQAR grid is its recall test")
        return
    result.metrics |= niah_accuracy(model, tokenizer, tasks=list(cfg.tasks), lengths=list(cfg.lengths),
                                    num_samples=cfg.num_samples, seed=cfg.seed)


def _lm_eval(model, run_config, eval_cfg, tokenizer, result: SuiteResult) -> None:
    if tokenizer is None or run_config.data.get("_target_") not in TEXT_DATA_TARGETS:
        result.notes.append("lm-eval tasks skipped: they need a text run (a text tokenizer)")
        return
    from gdn.eval.lm_eval_adapter import run_lm_eval_tasks

    cfg = eval_cfg.lm_eval
    max_length = cfg.max_length or run_config.data.seq_len
    result.metrics |= run_lm_eval_tasks(model, tokenizer, list(eval_cfg.lm_eval_tasks), include_path=cfg.include_path,
                                        builtin_tasks=cfg.builtin_tasks, num_fewshot=cfg.num_fewshot, limit=cfg.limit,
                                        batch_size=cfg.batch_size, max_length=max_length)

