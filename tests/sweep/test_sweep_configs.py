"""Every sweep of sweeps/sweep/ is found through Hydra's search path and every job it would launch composes.

Real Hydra composition (`+sweep=NAME`, then each combination of its hydra.sweeper.params as overrides), and each
job's data module is built, so a (pairs, length) setting that MQAR cannot hold fails here, not mid-sweep."""
from __future__ import annotations

import itertools

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate

from gdn.config import CONF_DIR, register_resolvers
from gdn.sweep.cli import main as sweep_main
from gdn.sweep.cli import sweep_names

GRID_SWEEPS = ["baselines", "gdn_ablation", "lr", "mqar_difficulty"]
ALL_MODELS = {"gdn", "gdn_h1", "gdn_h2", "deltanet", "mamba2", "samba", "transformer"}


def compose_job(*overrides: str, hydra_cfg: bool = False):
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=["logging=none", *overrides], return_hydra_config=hydra_cfg)


def sweep_axes(sweep: str) -> list[list[str]]:
    """The values of each hydra.sweeper.params axis of `+sweep=NAME` as overrides (Hydra's own parser)."""
    params = compose_job(f"+sweep={sweep}", hydra_cfg=True).hydra.sweeper.params
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    return [[f"{o.get_key_element()}={value}" for value in o.sweep_string_iterator()] if o.is_sweep_override()
            else [f"{o.get_key_element()}={o.get_value_element_as_str()}"] for o in parsed]


def jobs_to_compose(axes: list[list[str]]) -> list[list[str]]:
    """Every combination of the non-model axes (with the first model), then every other model once: each value
    and each data setting is composed without the whole product."""
    model_axis = next((axis for axis in axes if axis[0].startswith("model=")), None)
    others = [axis for axis in axes if axis is not model_axis]
    jobs = [list(combo) + ([model_axis[0]] if model_axis else []) for combo in itertools.product(*others)]
    return jobs + [[axis[0] for axis in others] + [model] for model in (model_axis or [])[1:]]


def test_the_sweeps_there_are():
    assert sweep_names() == sorted(GRID_SWEEPS + ["lr_optuna"])


@pytest.mark.parametrize("sweep", GRID_SWEEPS)
def test_every_job_of_a_sweep_composes_and_builds_its_data(sweep):
    axes = sweep_axes(sweep)
    expected_jobs = {"baselines": 7, "gdn_ablation": 8, "lr": 21, "mqar_difficulty": 28}[sweep]
    assert len(list(itertools.product(*axes))) == expected_jobs
    jobs = jobs_to_compose(axes)
    for overrides in jobs:
        cfg = compose_job(f"+sweep={sweep}", *overrides)
        assert cfg.logging.experiment_name == sweep == cfg.sweep.name
        assert cfg.seed == 0 and cfg.trainer.max_steps <= 150  # the CPU defaults: one seed, a short budget
        data = instantiate(cfg.data, num_eval_examples=8, _convert_="all")
        assert data.seq_len == cfg.data.seq_len
    if sweep in ("baselines", "lr", "mqar_difficulty"):
        assert {o.split("=")[1] for job in jobs for o in job if o.startswith("model=")} == ALL_MODELS


@pytest.mark.parametrize("ablation, key, value", [
    ("no_gate", "use_gate", False), ("no_delta", "use_delta", False), ("no_short_conv", "use_short_conv", False),
    ("no_output_gate", "use_output_gate", False), ("no_output_norm", "use_output_norm", False),
    ("head_dim_small", "head_dim", 8), ("head_dim_large", "head_dim", 32), ("full", "head_dim", 16),
])
def test_each_ablation_changes_exactly_its_switch(ablation, key, value):
    full = compose_job("+sweep=gdn_ablation", "+ablation=full").model.mixers.gdn
    ablated = compose_job("+sweep=gdn_ablation", f"+ablation={ablation}").model.mixers.gdn
    assert ablated[key] == value
    assert {k for k in full if full[k] != ablated[k]} == ({key} if ablation != "full" else set())


def test_ablation_head_dims_follow_the_sweep_keys():
    cfg = compose_job("+sweep=gdn_ablation", "+ablation=head_dim_large", "sweep.head_dim_large=256")
    assert cfg.model.mixers.gdn.head_dim == 256


def test_the_command_line_wins_over_the_sweep_defaults():
    cfg = compose_job("+sweep=baselines", "trainer.max_steps=7", "logging.experiment_name=mine")
    assert cfg.trainer.max_steps == 7 and cfg.logging.experiment_name == "mine"


def test_optuna_sweep_selects_the_optuna_sweeper():
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    cfg = compose_job("+sweep=lr_optuna", hydra_cfg=True)
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper")
    assert cfg.hydra.sweeper.direction == "minimize" and cfg.hydra.sweeper.storage is None
    assert cfg.hydra.sweeper.params["optim.optimizer.lr"] == "tag(log, interval(1e-4, 3e-2))"


def test_gdn_sweep_names_an_unknown_sweep(capsys):
    with pytest.raises(SystemExit) as exit_info:
        sweep_main(["baseline"])
    assert exit_info.value.code == 2
    assert "unknown sweep 'baseline'; choices: baselines, gdn_ablation, lr, lr_optuna, mqar_difficulty" in \
        capsys.readouterr().err
