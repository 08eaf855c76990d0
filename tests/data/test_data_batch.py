import torch

from gdn.data import Batch


def test_num_valid_tokens_counts_labels_not_ignored():
    batch = Batch(torch.zeros(2, 3, dtype=torch.long), torch.tensor([[-100, 5, 0], [-100, -100, 7]]))
    assert batch.num_valid_tokens == 3


def test_to_moves_every_tensor_and_keeps_missing_cu_seqlens():
    batch = Batch(torch.arange(6).view(2, 3), torch.arange(6).view(2, 3), torch.tensor([0, 3, 6], dtype=torch.int32))
    moved = batch.to("cpu")
    assert torch.equal(moved.input_ids, batch.input_ids)
    assert torch.equal(moved.labels, batch.labels)
    assert torch.equal(moved.cu_seqlens, batch.cu_seqlens)
    assert Batch(batch.input_ids, batch.labels).to("cpu").cu_seqlens is None
