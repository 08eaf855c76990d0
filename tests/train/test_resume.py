"""A run of N steps equals a run stopped at N/2 and resumed, loss for loss, bit for bit (CPU, float32)."""
from pathlib import Path

import torch

from gdn.train.export import load_consolidated_model_state
from gdn.train.main import run


def test_stop_and_resume_reproduces_the_uninterrupted_run(compose_config, tmp_path: Path):
    straight = run(compose_config(), tmp_path / "straight")

    first = run(compose_config("trainer.stop_after_steps=4"), tmp_path / "interrupted")
    assert first.step == 4
    second = run(compose_config("trainer.resume=auto"), tmp_path / "interrupted")

    assert len(straight.losses) == 8
    assert first.losses + second.losses == straight.losses  # exact equality, not approximate
    assert second.eval_metrics == straight.eval_metrics
    assert second.tokens_seen == straight.tokens_seen
    final_straight = load_consolidated_model_state(straight.checkpoint)
    final_resumed = load_consolidated_model_state(second.checkpoint)
    assert all(torch.equal(final_straight[k], final_resumed[k]) for k in final_straight)


def test_resume_from_an_explicit_checkpoint_path(compose_config, tmp_path: Path):
    first = run(compose_config("trainer.stop_after_steps=4"), tmp_path / "a")
    resumed = run(compose_config(f"trainer.resume={first.checkpoint}"), tmp_path / "b")
    assert resumed.step == 8 and len(resumed.losses) == 4


def test_resume_from_a_missing_path_names_it(compose_config, tmp_path: Path):
    missing = tmp_path / "nowhere"
    try:
        run(compose_config(f"trainer.resume={missing}"), tmp_path / "c")
    except FileNotFoundError as error:
        assert str(missing) in str(error) and "'latest' pointer" in str(error)
    else:
        raise AssertionError("resuming from a missing checkpoint must fail")


def test_a_changed_global_batch_restarts_the_data_position_with_a_warning(compose_config, tmp_path: Path):
    import pytest

    run(compose_config("trainer.stop_after_steps=4"), tmp_path / "run")
    with pytest.warns(UserWarning, match="data position cannot be carried over and restarts at micro-batch 4"):
        resumed = run(compose_config("trainer.resume=auto", "data.batch_size=4"), tmp_path / "run")
    assert resumed.step == 8
