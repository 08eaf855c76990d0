"""`gdn-generate`: continue a prompt with a trained run's model, on the recurrent decode path.

    gdn-generate outputs/runs/<date>/<time> prompt="The delta rule"                  # greedy
    gdn-generate RUN prompt="The delta rule" temperature=0.8 top_k=40 num_samples=3 seed=1
    gdn-generate RUN prompt_ids=[5,40,9,51,0,5] max_new_tokens=1                      # MQAR: token ids

Text runs print the prompt and each continuation as text; runs on a toy vocabulary (MQAR) take and print ids.
"""
from __future__ import annotations

import sys

import torch
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue

from gdn.config import compose_config
from gdn.data.tokenizer import end_of_document_id
from gdn.eval.generation import SamplingSettings, generate
from gdn.eval.loading import LoadedRun, load_run
from gdn.eval.suite import autocast_for, resolve_device

USAGE = ("usage: gdn-generate RUN prompt=TEXT | prompt_ids=[...] "
         "[max_new_tokens= temperature= top_k= num_samples= seed=]")


def prompt_tokens(run: LoadedRun, cfg: DictConfig) -> list[int]:
    if cfg.prompt_ids is not None:
        ids = [int(i) for i in cfg.prompt_ids]
        vocab = run.model.embed.num_embeddings
        if not ids or not all(0 <= i < vocab for i in ids):
            raise ValueError(f"prompt_ids must be a non-empty list of ids in [0, {vocab}), got {ids}")
        return ids
    if run.tokenizer is None:
        raise ValueError(f"this run's data ({run.config.data._target_}) has no text tokenizer: give the prompt as "
                         f"token ids, prompt_ids=[...]")
    ids = run.tokenizer.encode(cfg.prompt, add_special_tokens=False).ids
    return ids or [end_of_document_id(run.tokenizer)]  # an empty prompt starts a new document


def continuations(run: LoadedRun, cfg: DictConfig) -> list[list[int]]:
    settings = SamplingSettings(cfg.max_new_tokens, cfg.temperature, cfg.top_k)
    generator = torch.Generator().manual_seed(cfg.seed)
    prompt = prompt_tokens(run, cfg)
    with autocast_for(next(run.model.parameters()).device):
        return [generate(run.model, prompt, settings, generator) for _ in range(cfg.num_samples)]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        raise SystemExit(0 if argv else 2)
    overrides = [f"run={arg}" if "=" not in arg and i == 0 else arg for i, arg in enumerate(argv)]
    try:
        cfg = compose_config("generate", overrides)
        run = load_run(cfg.run, resolve_device(cfg.device))
        outputs = continuations(run, cfg)
    except MissingMandatoryValue:
        print(f"error: no run given; {USAGE}", file=sys.stderr)
        raise SystemExit(2) from None
    except (HydraException, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    for i, ids in enumerate(outputs):
        text = run.tokenizer.decode(ids) if run.tokenizer is not None else " ".join(map(str, ids))
        print(f"--- sample {i} ---\n{cfg.prompt if run.tokenizer is not None else ''}{text}")


if __name__ == "__main__":
    main()
