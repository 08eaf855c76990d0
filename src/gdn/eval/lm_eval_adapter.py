"""lm-eval-harness adapter: our text models as an `lm_eval` LM, registered as `gdn`.

    gdn-lm-eval --model gdn --model_args run_dir=outputs/runs/<date>/<time> --tasks lambada_openai
    gdn-lm-eval --model gdn --model_args run_dir=RUN,max_length=2048 --tasks my_task --include_path my_tasks/
    gdn-eval RUN eval.lm_eval_tasks=[lambada_openai]

lm-eval 0.4.13 (the newest release) finds models only in its own registry and has no plugin discovery, so the
stock `lm_eval` command cannot see a third-party model: `gdn-lm-eval` is lm-eval's own command line with this
module imported first (which registers `gdn`). In Python, importing this module is enough:
`lm_eval.simple_evaluate(model="gdn", model_args="run_dir=...")`.

Scoring (loglikelihood, loglikelihood_rolling) runs the full forward over right-padded rows (every mixer is
causal, so padding after a row never changes its logits); generate_until runs on the recurrent decode path.
Contexts longer than max_length keep their last max_length tokens.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from gdn.data.tokenizer import end_of_document_id
from gdn.eval.generation import SamplingSettings, generate
from gdn.eval.suite import autocast_for, resolve_device
from gdn.eval.tracking import metric_name

DEFAULT_MAX_GEN_TOKS = 256



def lm_eval_device(requested: str | None) -> torch.device:
    """lm-eval's command line asks for cuda:0 unless told otherwise, also on machines without CUDA: there the
    model runs on the CPU (with a warning) rather than failing."""
    device = resolve_device(requested or "auto")
    if device.type == "cuda" and not torch.cuda.is_available():
        warnings.warn(f"device {requested!r} requested but CUDA is not available: running on the CPU", stacklevel=2)
        return torch.device("cpu")
    return device


@register_model("gdn")
class GdnLM(TemplateLM):
    """model_args: run_dir (a run folder, checkpoint or .safetensors file, as gdn-eval takes), max_length
    (default: the run's training sequence length), device, batch_size. In Python, model= and tokenizer= take an
    in-memory model and HF tokenizers Tokenizer instead of run_dir. max_batch_size (lm-eval passes it) is unused:
    batch_size is fixed."""

    def __init__(self, run_dir: str | None = None, device: str | None = None, batch_size: int | str | None = 8,
                 max_length: int | str | None = None, model: torch.nn.Module | None = None, tokenizer=None,
                 max_batch_size: int | None = None):
        super().__init__()
        if model is None:
            if run_dir is None:
                raise ValueError("--model_args needs run_dir=PATH (a gdn-train run folder or checkpoint)")
            from gdn.eval.loading import load_run

            run = load_run(Path(run_dir), lm_eval_device(device))
            if run.tokenizer is None:
                raise ValueError(f"{run_dir} is not a text run (data: {run.config.data._target_}): lm-eval tasks "
                                 f"need a model trained with a text tokenizer")
            model, tokenizer = run.model, run.tokenizer
            max_length = max_length or run.config.data.seq_len
        if tokenizer is None or max_length is None:
            raise ValueError("an in-memory model needs tokenizer= and max_length=")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.batch_size = 8 if batch_size in (None, "auto") or str(batch_size).startswith("auto") else int(batch_size)
        self._device = next(model.parameters()).device
        self._eot = end_of_document_id(tokenizer)

    # -- tokenizer --------------------------------------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self._eot

    @property
    def tokenizer_name(self) -> str:
        return "gdn-bpe"

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        return self.tokenizer.encode(string, add_special_tokens=False).ids

    def tok_decode(self, tokens: Sequence[int]) -> str:
        return self.tokenizer.decode(list(tokens))

    # -- scoring ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _score(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """(sum of log p(continuation | context), whether greedy decoding yields the continuation) for each
        (context tokens, continuation tokens); longest rows first, batch_size rows at a time."""
        results: list[tuple[float, bool] | None] = [None] * len(pairs)
        rows = []
        for index, (context, continuation) in enumerate(pairs):
            if not continuation:
                results[index] = (0.0, True)
                continue
            whole = (context + continuation)[-(self.max_length + 1):]
            rows.append((index, whole[:-1], continuation[-(len(whole) - 1):]))
        rows.sort(key=lambda row: -len(row[1]))
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            width = len(chunk[0][1])
            inputs = torch.full((len(chunk), width), self._eot, dtype=torch.long)
            for r, (_, tokens, _) in enumerate(chunk):
                inputs[r, : len(tokens)] = torch.tensor(tokens)
            with autocast_for(self._device):
                logits = self.model(inputs.to(self._device))
            log_probs = F.log_softmax(logits.float(), dim=-1).cpu()
            for r, (index, tokens, continuation) in enumerate(chunk):
                n = len(continuation)
                span = log_probs[r, len(tokens) - n : len(tokens)]  # the positions that predict the continuation
                target = torch.tensor(continuation)
                total = float(span.gather(-1, target[:, None]).sum())
                results[index] = (total, bool((span.argmax(-1) == target).all()))
        return results

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        results = self._score([(context, continuation) for _, context, continuation in requests])
        for (key, _, _), result in zip(requests, results):
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, result)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Whole-document log-likelihood in disjoint windows of max_length, each token predicted once."""
        results = []
        for request in requests:
            (text,) = request.args
            windows = [make_disjoint_window(w) for w in get_rolling_token_windows(
                token_list=self.tok_encode(text), prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length, context_len=1)]
            total = sum(logprob for logprob, _ in self._score(windows))
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), total)
            results.append(total)
        return results

    # -- generation -------------------------------------------------------------------------------------------
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        outputs = []
        for request in requests:
            context, gen_kwargs = request.args
            text = self.generate_text(context, dict(gen_kwargs))
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
            outputs.append(text)
        return outputs

    def generate_text(self, context: str, gen_kwargs: dict) -> str:
        """Greedy (or sampled with do_sample / temperature / top_k) continuation of `context` on the decode path,
        cut before the first stop string of `until`; stops at the end-of-document token too."""
        until = gen_kwargs.pop("until", None) or []
        until = [until] if isinstance(until, str) else list(until)
        max_new = int(gen_kwargs.pop("max_gen_toks", DEFAULT_MAX_GEN_TOKS))
        temperature = float(gen_kwargs.pop("temperature", 0.0)) if gen_kwargs.pop("do_sample", False) else 0.0
        settings = SamplingSettings(max_new_tokens=max_new, temperature=temperature,
                                    top_k=gen_kwargs.pop("top_k", None))
        prompt = (self.tok_encode(context) if context else [self.prefix_token_id])[-self.max_length:]

        def stop(new_ids: list[int]) -> bool:
            return new_ids[-1] == self._eot or any(s in self.tok_decode(new_ids) for s in until)

        with torch.no_grad(), autocast_for(self._device):
            new_ids = generate(self.model, prompt, settings, stop=stop)
        if new_ids and new_ids[-1] == self._eot:
            new_ids = new_ids[:-1]
        text = self.tok_decode(new_ids)
        cuts = [text.index(s) for s in until if s in text]
        return text[: min(cuts)] if cuts else text


def run_lm_eval_tasks(model: torch.nn.Module, tokenizer, tasks: list[str], *, include_path: str | None = None,
                      builtin_tasks: bool = True, num_fewshot: int | None = None, limit: float | None = None,
                      batch_size: int = 8, max_length: int) -> dict[str, float]:
    """lm-eval's simple_evaluate on the in-memory model; {"lm_eval/<task>/<metric>": value} for every number
    it reports (standard errors included). builtin_tasks=False indexes only include_path's task YAMLs."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    if not builtin_tasks and include_path is None:
        raise ValueError("eval.lm_eval.builtin_tasks=false needs eval.lm_eval.include_path (a folder of task YAMLs)")
    lm = GdnLM(model=model, tokenizer=tokenizer, max_length=max_length, batch_size=batch_size)
    task_manager = TaskManager(include_path=include_path, include_defaults=builtin_tasks)
    output = lm_eval.simple_evaluate(model=lm, tasks=tasks, num_fewshot=num_fewshot, limit=limit,
                                     task_manager=task_manager, log_samples=False)
    metrics = {}
    for task, values in output["results"].items():
        for name, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                metrics[f"lm_eval/{task}/{metric_name(name)}"] = float(value)
    return metrics
