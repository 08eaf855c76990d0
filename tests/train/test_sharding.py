"""Data-parallel layout: each rank's rows of a packed batch, the dp_replicate x dp_shard check, Slurm -> torchrun
variables."""
import numpy as np
import pytest
import torch

from gdn.data.packing import batch_from_windows
from gdn.train.distributed import ParallelDims, first_slurm_host, slurm_to_torch_env
from gdn.train.sharding import shard_rows

END = 1


def batch_from_rows(packed: torch.Tensor, end: int):
    """The Batch of token windows whose documents start after each `end` token."""
    windows = packed.numpy()
    starts = np.zeros(windows.shape, dtype=bool)
    starts[:, 1:] = windows[:, :-1] == end
    return batch_from_windows(windows, starts)


def test_each_rank_gets_what_packing_its_rows_alone_gives():
    g = torch.Generator().manual_seed(0)
    packed = torch.randint(2, 9, (4, 13), generator=g)
    packed[packed == 5] = END  # documents end inside rows
    whole = batch_from_rows(packed, END)
    for rank in range(2):
        shard, alone = shard_rows(whole, rank, 2), batch_from_rows(packed[2 * rank : 2 * rank + 2], END)
        assert torch.equal(shard.input_ids, alone.input_ids) and torch.equal(shard.labels, alone.labels)
        assert torch.equal(shard.cu_seqlens, alone.cu_seqlens)


def test_a_batch_that_does_not_split_evenly_names_the_fix():
    whole = batch_from_rows(torch.full((6, 5), 3), END)
    with pytest.raises(ValueError, match="set data.batch_size to a multiple of 4"):
        shard_rows(whole, 0, 4)


def test_parallel_dims():
    assert ParallelDims.from_config(1, -1, 8) == ParallelDims(1, 8, 8)
    assert ParallelDims.from_config(2, -1, 8) == ParallelDims(2, 4, 8) and ParallelDims(2, 4, 8).hsdp
    assert not ParallelDims.from_config(1, -1, 1).distributed
    with pytest.raises(ValueError, match="must equal the world size 8"):
        ParallelDims.from_config(2, 2, 8)
    with pytest.raises(ValueError, match="does not divide the world size 8"):
        ParallelDims.from_config(3, -1, 8)


def test_slurm_variables_become_torchrun_variables():
    assert first_slurm_host("gpu[03-05,07],cpu1") == "gpu03" and first_slurm_host("node7") == "node7"
    env = {"SLURM_PROCID": "5", "SLURM_NTASKS": "16", "SLURM_LOCALID": "5", "SLURM_JOB_NODELIST": "h100-[12-13]",
           "SLURM_JOB_ID": "123456"}
    slurm_to_torch_env(env)
    assert (env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"], env["MASTER_ADDR"], env["MASTER_PORT"]) == \
        ("5", "16", "5", "h100-12", str(20000 + 123456 % 20000))
    step = {"SLURM_PROCID": "1", "SLURM_NTASKS": "16", "SLURM_STEP_NUM_TASKS": "2", "SLURM_JOB_NODELIST": "a1"}
    slurm_to_torch_env(step)  # an srun step of 2 tasks inside a larger allocation
    assert (step["RANK"], step["WORLD_SIZE"], step["MASTER_ADDR"]) == ("1", "2", "a1")
    torchrun = {"RANK": "1", "WORLD_SIZE": "2", "SLURM_PROCID": "0", "SLURM_NTASKS": "1"}
    slurm_to_torch_env(torchrun)  # torchrun's own variables win
    assert torchrun["RANK"] == "1" and "MASTER_ADDR" not in torchrun
