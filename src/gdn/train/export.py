"""Consolidate a DCP checkpoint's model weights into one safetensors file (for evaluation, sharing, other tools).

    python -m gdn.train.export outputs/runs/<date>/<time>/checkpoints model.safetensors
    python -m gdn.train.export outputs/runs/<date>/<time>/checkpoints/step-000500 model.safetensors

Runs in one process without a model: the tensors are rebuilt from the checkpoint's metadata, whatever world size
wrote it. Keys are the LanguageModel's own parameter names (embed.weight, blocks.0.mixer.q_proj.weight, ...).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.format_utils import _EmptyStateDictLoadPlanner
from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

from gdn.train.checkpoint import intact_checkpoint
from gdn.train.checkpoint_record import DamagedCheckpointError


def load_consolidated_model_state(step_dir: Path) -> dict[str, torch.Tensor]:
    """The full (unsharded) model state dict of a checkpoint, on the CPU."""
    state: dict = {}
    # _EmptyStateDictLoadPlanner (what torch's own dcp_to_torch_save uses) allocates every tensor from the
    # metadata; keys={"model"} skips the optimizer state.
    _load_state_dict(state, storage_reader=FileSystemReader(str(step_dir)),
                     planner=_EmptyStateDictLoadPlanner(keys={"model"}), no_dist=True)
    return dict(state["model"])


def export_safetensors(checkpoint: str | Path, output: str | Path) -> Path:
    """Write the model weights of `checkpoint` (a step folder or a checkpoints/ folder) to `output`; a damaged
    checkpoint raises DamagedCheckpointError (one line) and writes nothing."""
    from safetensors.torch import save_file

    step_dir = intact_checkpoint(Path(checkpoint), f"export of {checkpoint}")
    weights = {name: tensor.contiguous() for name, tensor in load_consolidated_model_state(step_dir).items()}
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(output), metadata={"checkpoint": str(step_dir)})
    return output


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a step-NNNNNN folder or a run's checkpoints/ folder")
    parser.add_argument("output", help="the .safetensors file to write")
    args = parser.parse_args(argv)
    try:
        path = export_safetensors(args.checkpoint, args.output)
    except (FileNotFoundError, DamagedCheckpointError) as error:
        raise SystemExit(f"error: {error}") from None
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
