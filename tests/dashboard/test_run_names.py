"""Run names: what differs between a sweep's jobs (Hydra's override grammar), a single run's overrides."""
from datetime import datetime

from gdn.dashboard.run_names import run_name, sweep_run_name, varying_sweep_keys


def test_the_keys_that_take_several_values_over_the_jobs():
    baselines = {"model": "gdn,gdn_h1,gdn_h2,deltanet,mamba2,samba,transformer", "seed": "0"}
    assert varying_sweep_keys(baselines, ["+sweep=baselines"]) == ["model"]
    # the command line wins for a key: one model, three seeds
    assert varying_sweep_keys(baselines, ["+sweep=baselines", "model=gdn", "seed=0,1,2"]) == ["seed"]
    assert varying_sweep_keys(baselines, ["model=gdn,mamba2", "seed=range(0,2)", "trainer.max_steps=4"]) == \
        ["model", "seed"]
    ablation = {"+ablation": "full,no_gate", "seed": "0"}
    assert varying_sweep_keys(ablation, []) == ["ablation"]
    assert varying_sweep_keys({"optim.optimizer.lr": "tag(log, interval(1e-4, 3e-2))"}, []) == \
        ["optim.optimizer.lr"]  # Optuna's search space: every trial differs
    assert varying_sweep_keys({}, ["model=gdn,gdn", "seed=choice(1)"]) == []  # one value, however written


def test_a_child_is_named_by_its_architecture_and_the_varying_overrides():
    job = ["+sweep=baselines", "model=mamba2", "seed=1", "trainer.max_steps=4"]
    assert run_name("mamba2", job, ["model", "seed"]) == "mamba2 seed=1"
    assert run_name("mamba2", job, ["model"]) == "mamba2"
    assert run_name("gdn", ["+ablation=no_gate", "seed=0"], ["ablation"]) == "gdn ablation=no_gate"
    assert run_name("gdn", ["optim.optimizer.lr=0.0012345678"], ["optim.optimizer.lr"]) == "gdn lr=0.001235"
    assert run_name("gdn", ["seed=0"], []) == "gdn"


def test_a_single_run_is_named_by_its_architecture_and_overrides():
    assert run_name("gdn", []) == "gdn"
    overrides = ["model=transformer", "optim.optimizer.lr=1e-3", "scale=1.3b", "hydra.run.dir=/x",
                 "logging.experiment_name=e", "trainer.resume=auto", "paths.output_root=/o"]
    assert run_name("transformer", overrides) == "transformer lr=0.001 scale=1.3b"
    assert run_name("gdn", ["model.layers=[mamba2,gdn]", "~model.mlp"]) == "gdn layers=[mamba2,gdn]"
    assert len(run_name("gdn", [f"model.k{i}={'x' * 40}" for i in range(10)])) == 250  # MLflow's limit


def test_a_parent_is_named_by_its_sweep_and_start():
    assert sweep_run_name("baselines", datetime(2026, 12, 2, 13, 50, 7)) == "baselines 2026-12-02 13:50"
