"""One `gdn-train` per rank: Hydra runs in every process, so every rank must agree on the run folder.

Hydra names the folder from the time (`hydra.run.dir` / `hydra.sweep.dir` use `${gdn.launch_time:FORMAT}`).
Ranks start at slightly different times, so under torchrun (WORLD_SIZE > 1 before Hydra starts) the process group
is joined first, rank 0 reads the clock and broadcasts it, and every rank formats the same instant: one folder.
A broadcast rather than a name derived from TORCHELASTIC_RUN_ID because torchrun's default run id is "none" for
every launch, which would put all runs in one folder. Ranks other than 0 also write no .hydra/ copy of the
config and no Hydra log file, so nothing races on the folder; rank 0 writes them.

Slurm through hydra-submitit-launcher needs none of this: the launcher composes each job (its folder included)
once, on the submitting machine, and every task of the job runs with that config; the trainer joins the
process group from Slurm's variables (gdn.train.distributed.slurm_to_torch_env).
"""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from datetime import datetime

import torch

from gdn.config import LAUNCH_TIME_ENV
from gdn.train import distributed as dist_utils

# What ranks other than 0 add to their command line: no config copy, no log file in the shared folder.
SILENT_RANK_OVERRIDES = ("hydra.output_subdir=null", "hydra/job_logging=disabled", "hydra/hydra_logging=disabled")


@contextlib.contextmanager
def prepare_launch() -> Iterator[None]:
    """Around Hydra's main under a multi-process launch: join the group, share rank 0's clock, quiet other ranks'
    Hydra output; leave the group at the end. Does nothing for one process."""
    if dist_utils.env_world_size() <= 1:
        yield
        return
    owns_group = dist_utils.init_process_group("cuda" if torch.cuda.is_available() else "cpu")
    os.environ[LAUNCH_TIME_ENV] = dist_utils.broadcast_string(datetime.now().isoformat())
    if not dist_utils.is_main_process():
        sys.argv.extend(SILENT_RANK_OVERRIDES)
    try:
        yield
    finally:
        if owns_group:
            dist_utils.destroy_process_group()
