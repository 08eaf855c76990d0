"""Process group and device mesh: who am I (rank, world size, device) and how the data-parallel ranks are laid out.

World size and ranks come from the launcher's environment:
- torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT;
- Slurm (one task per GPU, e.g. hydra-submitit-launcher) sets SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID and
  SLURM_JOB_NODELIST; `slurm_to_torch_env` maps them to the torchrun names (MASTER_ADDR = the first node).
A single process (WORLD_SIZE unset or 1) creates no process group and trains exactly as before.

Data-parallel layout (`trainer.parallel.dp_replicate` x `dp_shard` = world size): dp_replicate = 1 is plain FSDP
over all ranks; dp_replicate > 1 is HSDP, a 2-D mesh ("dp_replicate", "dp_shard") where parameters are sharded
within a group of dp_shard ranks (a node, say) and replicated across the groups.
"""
from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

DEFAULT_MASTER_PORT = 29500


@dataclass(frozen=True)
class ParallelDims:
    """dp_replicate x dp_shard ranks; dp_shard = -1 takes whatever the world size leaves."""

    dp_replicate: int
    dp_shard: int
    world_size: int

    @classmethod
    def from_config(cls, dp_replicate: int, dp_shard: int, world_size: int) -> "ParallelDims":
        if dp_replicate < 1:
            raise ValueError(f"trainer.parallel.dp_replicate={dp_replicate}: must be >= 1")
        if dp_shard == -1:
            if world_size % dp_replicate:
                raise ValueError(f"trainer.parallel.dp_replicate={dp_replicate} does not divide the world size "
                                 f"{world_size}; set dp_replicate to a divisor of it")
            dp_shard = world_size // dp_replicate
        if dp_shard < 1 or dp_replicate * dp_shard != world_size:
            raise ValueError(f"trainer.parallel.dp_replicate={dp_replicate} x dp_shard={dp_shard} must equal the "
                             f"world size {world_size}; set dp_shard=-1 to infer it")
        return cls(dp_replicate, dp_shard, world_size)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def hsdp(self) -> bool:
        return self.dp_replicate > 1

    def build_mesh(self, device_type: str) -> DeviceMesh | None:
        """None for one process; a 1-D mesh for FSDP; a 2-D (replicate, shard) mesh for HSDP."""
        if not self.distributed:
            return None
        if self.hsdp:
            return init_device_mesh(device_type, (self.dp_replicate, self.dp_shard),
                                    mesh_dim_names=("dp_replicate", "dp_shard"))
        return init_device_mesh(device_type, (self.dp_shard,), mesh_dim_names=("dp_shard",))


def first_slurm_host(nodelist: str) -> str:
    """The first host of a Slurm node list: "gpu[03-05,07],cpu1" -> "gpu03"."""
    match = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist)
    if not match:
        raise ValueError(f"cannot read the Slurm node list {nodelist!r}")
    prefix, ranges = match.groups()
    return prefix if ranges is None else prefix + ranges.split(",")[0].split("-")[0]


def slurm_to_torch_env(environ: dict[str, str] | None = None) -> None:
    """Fill RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT from Slurm's variables when a Slurm task
    was started by srun (submitit does so) without torchrun (torchrun's own variables win). The world is the srun
    step's tasks (SLURM_STEP_NUM_TASKS, else SLURM_NTASKS). MASTER_PORT: 20000 + job id mod 20000, the same on
    every task of a job and different for jobs sharing a node."""
    env = os.environ if environ is None else environ
    tasks = int(env.get("SLURM_STEP_NUM_TASKS", env.get("SLURM_NTASKS", "1")))
    if "RANK" in env or "SLURM_PROCID" not in env or tasks <= 1:
        return
    env["RANK"] = env["SLURM_PROCID"]
    env["WORLD_SIZE"] = str(tasks)
    env["LOCAL_RANK"] = env.get("SLURM_LOCALID", "0")
    env.setdefault("MASTER_ADDR", first_slurm_host(env.get("SLURM_JOB_NODELIST", env.get("SLURM_NODELIST", ""))))
    env.setdefault("MASTER_PORT", str(20000 + int(env.get("SLURM_JOB_ID", "0")) % 20000))


def env_world_size() -> int:
    slurm_to_torch_env()
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_process_group(device_type: str) -> bool:
    """Join the process group described by the environment; True when this call created it (a no-op returning
    False for one process or when the group exists). With CUDA the group has NCCL for GPU tensors and gloo for
    CPU tensors (asynchronous checkpoints, CPU-side flags)."""
    if env_world_size() <= 1 or dist.is_initialized():
        return False
    if device_type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="cpu:gloo,cuda:nccl")
    else:
        dist.init_process_group(backend="gloo")
    return True


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main_process() -> bool:
    return rank() == 0


def local_device(requested: str) -> torch.device:
    """"auto": this rank's GPU (LOCAL_RANK) when CUDA is available, else the CPU."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(requested)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    """Sum over ranks in place (identity for one process)."""
    if dist.is_initialized():
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def any_rank(flag: bool, device: torch.device) -> bool:
    """True when `flag` is set on any rank (e.g. a SIGTERM that reached only some ranks yet)."""
    if not dist.is_initialized():
        return flag
    value = torch.tensor([int(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def broadcast_string(value: str) -> str:
    """Rank 0's `value` on every rank."""
    if not dist.is_initialized():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def gather_objects(value):
    """Every rank's picklable `value`, in rank order, on every rank ([value] for one process)."""
    if not dist.is_initialized():
        return [value]
    values = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def warn_once_on_main(message: str) -> None:
    if is_main_process():
        warnings.warn(message, stacklevel=2)
