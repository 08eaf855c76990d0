"""The unit every data module hands to the trainer."""
from dataclasses import dataclass

import torch

IGNORE_INDEX = -100  # label value for positions that carry no loss


@dataclass
class Batch:
    """input_ids and labels are [B, T] long; labels use IGNORE_INDEX for ignored positions.

    cu_seqlens (int32, [N+1], 0 ... B*T) marks document starts over the flattened B*T tokens, or is None
    when every row is a single sequence.
    """

    input_ids: torch.Tensor
    labels: torch.Tensor
    cu_seqlens: torch.Tensor | None = None

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=non_blocking)

        return Batch(move(self.input_ids), move(self.labels), move(self.cu_seqlens))

    @property
    def num_valid_tokens(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())
