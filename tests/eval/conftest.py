"""Tiny real runs for the evaluation tests: gdn-train's own `run` on the composed Hydra config, a few steps on
the CPU, MLflow into an sqlite store under the test's folder. Built once per session and shared (read-only)."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from gdn.config import CONF_DIR, register_resolvers
from gdn.train.main import run

TINY = ["model.d_model=32", "++model.mixers.gdn.num_heads=2", "++model.mixers.gdn.head_dim=16",
        "trainer.max_steps=6", "trainer.log_every=3", "trainer.eval_every=6", "trainer.checkpoint_every=6",
        "trainer.progress_bar=false", "sched.warmup_steps=2"]
WORDS = "the state gate delta rule memory key value query recall token chunk model layer head decays".split()


def compose_train(root: Path, *overrides: str):
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=[f"paths.output_root={root}", *TINY, *overrides])


def write_corpus(path: Path, num_documents: int = 120, seed: int = 0) -> Path:
    rng = random.Random(seed)
    docs = [" ".join(rng.choices(WORDS, k=rng.randint(8, 40))).capitalize() + "." for _ in range(num_documents)]
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return path


@pytest.fixture(scope="session")
def runs_root(tmp_path_factory) -> Path:
    """One output root (one MLflow sqlite store) for the session's runs."""
    return tmp_path_factory.mktemp("eval_runs")


@pytest.fixture(scope="session")
def text_run(runs_root) -> Path:
    """A finished text run (byte-level BPE of 300 tokens trained on the corpus, GDN d32, 6 steps)."""
    corpus = write_corpus(runs_root / "corpus.jsonl")
    cfg = compose_train(runs_root, "data=text", f"data.path={corpus}", "data.vocab_size=300", "data.seq_len=32",
                        "data.batch_size=4", "data.eval_sequences=6")
    run(cfg, runs_root / "text")
    return runs_root / "text"


MQAR_AT_END = ["eval.at_end=true", "eval.mqar.kv_pairs=[2,4]", "eval.mqar.seq_lens=[32,64]",
               "eval.mqar.num_examples=32", "eval.perplexity.length_factors=[1,2]"]


@pytest.fixture(scope="session")
def mqar_run(runs_root) -> Path:
    """A finished MQAR run (vocab 64, 4 pairs in 32 tokens, 6 steps) that ran the suite at the end (MQAR_AT_END)."""
    cfg = compose_train(runs_root, "data.vocab_size=64", "data.seq_len=32", "data.num_kv_pairs=4",
                        "data.batch_size=8", "data.num_eval_examples=32", *MQAR_AT_END)
    run(cfg, runs_root / "mqar")
    return runs_root / "mqar"
