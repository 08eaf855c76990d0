"""A non-finite step is reported where it happened: the step, whether the loss or the gradient went first, and the
parameters (by name) whose gradients are non-finite; the last good state stays checkpointed."""
import itertools
import math
import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from hydra.utils import instantiate
from mlflow.tracking import MlflowClient

from gdn.train import checkpoint as ckpt
from gdn.train import main
from gdn.train.export import load_consolidated_model_state
from gdn.train.main import run
from gdn.train.spawn import free_port
from gdn.train.trainer import NonFiniteLossError

POISONED = "blocks.0.mixer.k_proj.weight"
EXPLODING = ["optim.optimizer.lr=1e30", "sched=constant", "sched.warmup_steps=1", "trainer.grad_clip=null"]


@pytest.fixture
def poison_gradient(monkeypatch):
    """poison_gradient(name, step): the gradient of parameter `name` becomes inf in the backward pass of `step`."""
    def install(name: str, step: int) -> None:
        real = main.parallelize

        def parallelize_then_poison(model, *args, **kwargs):
            model = real(model, *args, **kwargs)
            backward = itertools.count(1)
            dict(model.named_parameters())[name].register_hook(
                lambda grad: torch.full_like(grad, math.inf) if next(backward) == step else grad)
            return model

        monkeypatch.setattr(main, "parallelize", parallelize_then_poison)

    return install


def test_a_non_finite_gradient_names_the_step_and_the_parameter(compose_config, poison_gradient, tmp_path: Path,
                                                               monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    poison_gradient(POISONED, step=3)
    with pytest.raises(NonFiniteLossError) as info:
        run(compose_config("logging=mlflow"), tmp_path / "run")
    message = str(info.value)
    assert message.startswith("non-finite gradient at step 3 (loss ")
    assert "the loss was finite: the gradient went non-finite first, in the backward pass" in message
    assert "non-finite gradients in 1 of " in message and message.count(POISONED) == 1
    assert f"nearest the output first: {POISONED}: stopped; last good state saved to " in message  # the only one
    latest = ckpt.latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert ckpt.read_trainer_state(latest)["step"] == 2  # the last good state
    assert all(torch.isfinite(p).all() for p in load_consolidated_model_state(latest).values())
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (logged,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert logged.data.tags["non_finite"] == message.split(": stopped;")[0]
    assert logged.info.status == "FAILED"


def test_a_non_finite_loss_says_the_loss_went_first(compose_config, tmp_path: Path):
    cfg = compose_config(*EXPLODING)
    with pytest.raises(NonFiniteLossError) as info:
        run(cfg, tmp_path / "run")
    message = str(info.value)
    assert message.startswith("non-finite loss at step 2 (loss nan")
    assert "the loss went non-finite first, in the forward pass" in message
    listed = message.split("nearest the output first: ")[1].split(": stopped;")[0].split(" (+")[0].split(", ")
    names = [name for name, _ in instantiate(cfg.model, vocab_size=64).named_parameters()]
    assert listed == [name for name in reversed(names) if name in listed] and listed[0] == names[-1]


def test_skipped_steps_carry_the_diagnosis_too(compose_config, poison_gradient, tmp_path: Path, capsys):
    poison_gradient(POISONED, step=3)
    result = run(compose_config("trainer.nan_policy=skip"), tmp_path / "run")
    assert result.step == 8 and not math.isfinite(result.grad_norms[2])
    err = capsys.readouterr().err
    assert "warning: non-finite gradient at step 3" in err and f"first: {POISONED}: step skipped (1/10)" in err


def _two_rank_worker(rank: int, port: int, out: str) -> None:
    """FSDP2 over 2 gloo ranks: rank 1's shard of the second layer's weight gradient gets a NaN."""
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    from gdn.train.non_finite import non_finite_gradients

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
        for layer in model:
            fully_shard(layer)
        fully_shard(model)
        model(torch.randn(3, 4)).sum().backward()
        if rank == 1:
            model[1].weight.grad.to_local()[0, 0] = math.nan
        names, total = non_finite_gradients(model)
        torch.save((names, total), f"{out}-{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_every_fsdp_rank_names_a_parameter_non_finite_on_one_rank_only(tmp_path: Path):
    mp.start_processes(_two_rank_worker, args=(free_port(), str(tmp_path / "names")), nprocs=2, join=True,
                       start_method="spawn")
    for rank in (0, 1):
        assert torch.load(tmp_path / f"names-{rank}.pt") == (["1.weight"], 6)
