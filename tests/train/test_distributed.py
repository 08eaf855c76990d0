"""FSDP2 over 2 real gloo processes on the CPU: the same losses as one process on the same global batch, exact
stop/resume (asynchronous DCP save included), HSDP, and a checkpoint resumed at another world size."""
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from gdn.train.main import run
from gdn.train.spawn import spawn_runs

STEPS = ["trainer.max_steps=10", "trainer.eval_every=10", "trainer.checkpoint_every=10", "trainer.log_every=5"]


def plain(cfg) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)


def assert_close(losses, reference, rel=1e-5):
    assert len(losses) == len(reference)
    for got, want in zip(losses, reference):
        assert abs(got - want) <= rel * abs(want), (losses, reference)


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory):
    """One spawn of 2 ranks runs: 10 steps FSDP; 5 steps (async checkpoint) then resume to 10; 10 steps HSDP;
    10 steps of 2 accumulated micro-batches."""
    from hydra import compose, initialize_config_dir

    from gdn.config import CONF_DIR, register_resolvers
    from tests.train.conftest import TINY, TINY_DATA

    tmp = tmp_path_factory.mktemp("dist")
    register_resolvers()

    def compose_tiny(*overrides):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="train", overrides=[f"paths.output_root={tmp}", "logging=none", *TINY,
                                                          *STEPS, *overrides])
        for key, value in TINY_DATA.items():
            if key in cfg.data.keys():
                cfg.data[key] = value
        return cfg

    jobs = [
        (plain(compose_tiny()), tmp / "straight"),
        (plain(compose_tiny("trainer.stop_after_steps=5", "trainer.async_checkpoint=true")), tmp / "stopped"),
        (plain(compose_tiny("trainer.resume=auto")), tmp / "stopped"),
        (plain(compose_tiny("trainer.parallel.dp_replicate=2")), tmp / "hsdp"),
        (plain(compose_tiny("trainer.grad_accum=2")), tmp / "accumulated"),
    ]
    results = spawn_runs(jobs, world_size=2)
    single = run(compose_tiny(), tmp / "single")
    single_accumulated = run(compose_tiny("trainer.grad_accum=2"), tmp / "single_accumulated")
    return {"straight": results[0], "stopped": results[1], "resumed": results[2], "hsdp": results[3],
            "accumulated": results[4], "single": single, "single_accumulated": single_accumulated,
            "compose": compose_tiny, "tmp": tmp}


def test_fsdp_on_two_processes_gives_the_single_process_losses(two_process_runs):
    assert_close(two_process_runs["straight"].losses, two_process_runs["single"].losses)
    # Adam hides a uniform gradient scale in the losses; the norms show whether FSDP divided by the world size.
    assert_close(two_process_runs["straight"].grad_norms, two_process_runs["single"].grad_norms)
    assert two_process_runs["straight"].tokens_seen == two_process_runs["single"].tokens_seen
    for key, value in two_process_runs["single"].eval_metrics.items():
        assert abs(two_process_runs["straight"].eval_metrics[key] - value) <= 1e-5 * abs(value)


def test_hsdp_gives_the_single_process_losses(two_process_runs):
    assert_close(two_process_runs["hsdp"].losses, two_process_runs["single"].losses)
    assert_close(two_process_runs["hsdp"].grad_norms, two_process_runs["single"].grad_norms)


def test_gradient_accumulation_on_two_processes_gives_the_single_process_losses(two_process_runs):
    assert_close(two_process_runs["accumulated"].losses, two_process_runs["single_accumulated"].losses)
    assert_close(two_process_runs["accumulated"].grad_norms, two_process_runs["single_accumulated"].grad_norms)
    assert two_process_runs["accumulated"].losses != two_process_runs["straight"].losses  # other batches


def test_two_process_stop_and_resume_is_bit_exact(two_process_runs):
    stopped, resumed = two_process_runs["stopped"], two_process_runs["resumed"]
    assert stopped.step == 5 and resumed.step == 10
    assert stopped.losses + resumed.losses == two_process_runs["straight"].losses  # exact
    assert resumed.eval_metrics == two_process_runs["straight"].eval_metrics


def test_a_two_process_checkpoint_resumes_in_one_process(two_process_runs):
    tmp = two_process_runs["tmp"]
    checkpoint = Path(tmp) / "stopped" / "checkpoints" / "step-000005"
    assert (checkpoint / "COMPLETE").is_file()
    with pytest.warns(UserWarning, match="RNG states start fresh"):
        resumed = run(two_process_runs["compose"](f"trainer.resume={checkpoint}"), Path(tmp) / "one")
    assert resumed.step == 10
    assert_close(resumed.losses, two_process_runs["straight"].losses[5:])
