"""trainer.weights_dtype: fp32 master weights by default; bf16 puts the whole model and its AdamW state in bf16
(as FLA's throughput anchor trains), which the checkpoint shows tensor by tensor."""
from pathlib import Path

import pytest
import torch
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

from gdn.train.main import run
from gdn.train.trainer import TrainerSettings


def checkpoint_dtypes(path: Path) -> dict[str, torch.dtype]:
    metadata = FileSystemReader(str(path)).read_metadata().state_dict_metadata
    return {key: item.properties.dtype for key, item in metadata.items() if isinstance(item, TensorStorageMetadata)}


@pytest.mark.parametrize("weights_dtype", ["fp32", "bf16"])
def test_weights_and_adam_state_are_kept_in_the_chosen_dtype(compose_config, tmp_path: Path, weights_dtype):
    cfg = compose_config(f"trainer.weights_dtype={weights_dtype}", "trainer.max_steps=40", "optim.optimizer.lr=3e-3")
    result = run(cfg, tmp_path / "run")
    expected = {"fp32": torch.float32, "bf16": torch.bfloat16}[weights_dtype]
    dtypes = checkpoint_dtypes(result.checkpoint)
    weights = {k: d for k, d in dtypes.items() if k.startswith("model.")}
    adam = {k: d for k, d in dtypes.items() if k.startswith("optim.") and k.endswith(("exp_avg", "exp_avg_sq"))}
    assert weights and adam and set(weights.values()) == set(adam.values()) == {expected}
    assert sum(result.losses[-5:]) < sum(result.losses[:5])  # it trains


def test_an_unknown_weights_dtype_names_the_choices():
    with pytest.raises(ValueError, match="weights_dtype='fp16': choose fp32 or bf16"):
        TrainerSettings(max_steps=1, weights_dtype="fp16")
