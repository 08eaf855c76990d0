"""A bad config fails at composition (Hydra's schema: types, unknown keys) or at the value checks
(gdn.config.checks) with one line, before any model is built: no run folder, no MLflow store."""
from __future__ import annotations

import sys

import pytest
from hydra.core.global_hydra import GlobalHydra

from gdn.config import compose_config
from gdn.config.checks import ConfigValueError, check_config
from gdn.train.main import main as train_main

TYPE_ERRORS = [  # (override, what Hydra's message says)
    ("trainer.max_steps=abc", "Value 'abc' of type 'str' could not be converted to Integer"),
    ("trainer.progress_bar=maybe", "Value 'maybe' is not a valid bool"),
    ("optim.optimizer.lr=fast", "Value 'fast' of type 'str' could not be converted to Float"),
    ("data.batch_size=1.5", "Value '1.5' of type 'float' could not be converted to Integer"),
    ("trainer.max_step=10", "Could not override 'trainer.max_step'"),
    ("model.d_modle=64", "Could not override 'model.d_modle'"),
]
VALUE_ERRORS = [  # (overrides, the one line)
    (["+trainer.max_step=10"], "trainer.max_step is not a key of TrainerConfig: use one of max_steps, "
     "stop_after_steps, grad_accum, grad_clip, device, precision, weights_dtype, log_every, eval_every, "
     "checkpoint_every, keep_checkpoints, async_checkpoint, export_safetensors, resume, nan_policy, on_save_error, "
     "max_nan_skips, progress_bar, loss_chunk_tokens, system_metrics, parallel"),
    (["model.d_model=-8"], "model.d_model=-8 must be positive: set model.d_model to a value > 0"),
    (["trainer.max_steps=0"], "trainer.max_steps=0 must be positive: set trainer.max_steps to a value > 0"),
    (["optim.optimizer.lr=0"], "optim.optimizer.lr=0.0 must be positive: set optim.optimizer.lr to a value > 0"),
    (["data.seq_len=0"], "data.seq_len=0 must be positive: set data.seq_len to a value > 0"),
    (["model.mixers.gdn.num_heads=0"], "model.mixers.gdn.num_heads=0 must be positive: set "
                                       "model.mixers.gdn.num_heads to a value > 0"),
    (["model=gdn_h1", "model.n_layers=3"], "model.n_layers=3 must be a multiple of the pattern length 2 "
                                           "(model.layers=['gdn', 'swa']): set model.n_layers to a multiple of 2"),
    (["model=transformer", "model.mixers.attn.num_heads=3"], "model.mixers.attn.num_heads=3 must divide "
     "model.d_model=64: choose a divisor of 64, or set model.mixers.attn.head_dim"),
    (["model=gdn_h1", "model.mixers.swa.window=256"], "model.mixers.swa.window=256 is longer than data.seq_len=128: "
     "set model.mixers.swa.window <= 128 (or use the attn mixer for full attention)"),
    (["model=mamba2", "model.mixers.mamba2.headdim=48"], "model.mixers.mamba2.headdim=48 must divide expand * "
     "d_model = 128: choose a divisor of 128"),
    (["model.mixers.gdn.backend=triton", "model.mixers.gdn.head_dim=512"], "model.mixers.gdn.head_dim=512 exceeds "
     "the GPU kernels' K <= 256: use more heads of at most 256, or model.mixers.gdn.backend=torch"),
    (["model.mixers.gdn.backend=triton", "model.mixers.gdn.head_dim=256", "model.mixers.gdn.expand_v=4"],
     "model.mixers.gdn.head_dim * expand_v = 1024 exceeds the GPU kernels' V <= 512: lower "
     "model.mixers.gdn.expand_v or head_dim, or model.mixers.gdn.backend=torch"),
]


@pytest.fixture
def gdn_train(tmp_path, monkeypatch, capsys):
    """gdn_train(*overrides) -> (exit status, stdout, stderr) of gdn-train in this process, writing under tmp_path."""
    monkeypatch.setenv("GDN_OUTPUT_ROOT", str(tmp_path / "out"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)

    def _run(*overrides: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["gdn-train", *overrides])
        try:
            train_main()
            code = 0
        except SystemExit as exit_:
            code = exit_.code
        finally:
            GlobalHydra.instance().clear()
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return _run


def assert_nothing_written(tmp_path):
    assert not (tmp_path / "out").exists(), sorted(p.name for p in (tmp_path / "out").rglob("*"))
    assert not list(tmp_path.rglob("*.db")) and not list(tmp_path.rglob("mlruns"))


@pytest.mark.parametrize("override, message", TYPE_ERRORS, ids=[o for o, _ in TYPE_ERRORS])
def test_a_wrong_type_or_unknown_key_fails_at_composition(gdn_train, tmp_path, override, message):
    code, _, err = gdn_train(override)
    assert code == 1 and message in err, err
    key = override.lstrip("+").partition("=")[0]
    assert key.rpartition(".")[2] in err
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize("overrides, message", VALUE_ERRORS, ids=[" ".join(o) for o, _ in VALUE_ERRORS])
def test_a_value_that_cannot_work_is_one_line_before_anything_is_built(gdn_train, tmp_path, overrides, message):
    code, _, err = gdn_train(*overrides)
    assert (code, err) == (2, f"error: {message}\n")
    assert_nothing_written(tmp_path)


def test_the_batch_must_divide_over_the_ranks():
    cfg = compose_config("train", ["data.batch_size=32"])
    check_config(cfg, world_size=4)
    with pytest.raises(ConfigValueError) as error:
        check_config(cfg, world_size=3)
    assert str(error.value) == ("data.batch_size=32 is not divisible by the 3 ranks: "
                                "set data.batch_size to a multiple of 3")


def test_the_kernel_limits_apply_only_on_the_gpu_path():
    check_config(compose_config("train", ["model.mixers.gdn.backend=torch", "model.mixers.gdn.head_dim=512"]))


def test_cfg_job_prints_the_config(gdn_train, tmp_path):
    code, out, _ = gdn_train("--cfg", "job", "trainer.max_steps=7")
    assert code == 0 and "max_steps: 7" in out and "_target_: gdn.models.LanguageModel" in out
    assert_nothing_written(tmp_path)


def test_data_tokens_runs_at_its_defaults_as_the_readme_gives_it(gdn_train, tmp_path):
    """`gdn-train data=tokens data.path=OUT`: data.vocab_size defaults to 0, a floor under the prepared
    tokenizer's vocabulary, so the value check must let it through (it once stopped this command)."""
    from gdn.data.prepare import prepare
    from tests.data.text_corpus import synthetic_documents, write_corpus

    corpus = write_corpus(tmp_path / "corpus", synthetic_documents(), "jsonl")
    prepare(str(corpus), tmp_path / "tokens", vocab_size=300, val_docs=20, progress=False)
    code, out, err = gdn_train("data=tokens", f"data.path={tmp_path / 'tokens'}", "data.seq_len=64",
                               "data.batch_size=4", "data.eval_sequences=4", "trainer.max_steps=2",
                               "trainer.eval_every=2", "trainer.checkpoint_every=2", "trainer.device=cpu")
    assert code == 0, err
    assert "eval loss" in out
    code, _, err = gdn_train("data=tokens", f"data.path={tmp_path / 'tokens'}", "data.vocab_size=-1")
    assert (code, err) == (2, "error: data.vocab_size=-1 must be >= 0 (0: the prepared tokenizer's vocabulary)\n")
