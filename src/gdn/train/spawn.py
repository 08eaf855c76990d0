"""Run training jobs on N local processes joined in one process group (gloo on the CPU, NCCL on GPUs), without
torchrun: for tests and benchmarks that compare a multi-process run with a single-process one.

    results = spawn_runs([(config_dict, run_dir), ...], world_size=2)   # rank 0's TrainResult of each job

Every process joins the group once, runs the jobs in order (each job as `gdn.train.main.run`) and leaves.
"""
from __future__ import annotations

import os
import pickle
import socket
import tempfile
from pathlib import Path
from typing import Any

import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, jobs: list[tuple[dict[str, Any], str]], out: str) -> None:
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world_size),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    from omegaconf import OmegaConf

    from gdn.config import register_resolvers
    from gdn.train import distributed as dist_utils
    from gdn.train.main import run

    register_resolvers()
    cfg0 = OmegaConf.create(jobs[0][0])
    dist_utils.init_process_group(dist_utils.local_device(cfg0.trainer.device).type)
    try:
        results = [run(OmegaConf.create(config), Path(run_dir)) for config, run_dir in jobs]
    finally:
        dist_utils.destroy_process_group()
    if rank == 0:
        Path(out).write_bytes(pickle.dumps(results))


def spawn_runs(jobs: list[tuple[dict[str, Any], str | Path]], world_size: int) -> list[Any]:
    """`jobs`: (resolved config as a plain dict, run dir) pairs. Returns rank 0's TrainResult of each job."""
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "results.pkl")
        mp.start_processes(_worker, args=(world_size, free_port(), [(c, str(d)) for c, d in jobs], out),
                           nprocs=world_size, join=True, start_method="spawn")
        return pickle.loads(Path(out).read_bytes())
