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

    def pin_memory(self) -> "Batch":
        """In page-locked host memory, for a copy to the GPU that does not wait for the work queued before it."""
        tensors = (self.input_ids, self.labels, self.cu_seqlens)
        return Batch(*(None if t is None else t.pin_memory() for t in tensors))

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        """On a GPU with non_blocking, from pinned copies: a copy from pageable memory may wait for the work
        already queued on the stream (the previous step's optimizer), a pinned one is only queued."""
        pin = non_blocking and torch.device(device).type == "cuda"

        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            if t is None:
                return None
            return (t.pin_memory() if pin and not t.is_pinned() else t).to(device, non_blocking=non_blocking)

        return Batch(move(self.input_ids), move(self.labels), move(self.cu_seqlens))

    @property
    def num_valid_tokens(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())
