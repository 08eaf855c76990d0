"""One optimizer step: gradient accumulation weighs every valid token the same as one big batch would."""
from pathlib import Path

import torch

from gdn.data import Batch, MQARData
from gdn.models import LanguageModel
from gdn.train.loss import summed_cross_entropy
from gdn.train.schedule import WarmupConstant
from gdn.train.trainer import Trainer, TrainerSettings
from gdn.train.tracking import NullTracker


def tiny_model() -> LanguageModel:
    torch.manual_seed(0)
    return LanguageModel(vocab_size=32, d_model=16, n_layers=1, layers=["gdn"],
                         mixers={"gdn": {"num_heads": 1, "head_dim": 16, "chunk_size": 8}})


def test_accumulated_micro_batches_equal_one_concatenated_batch(tmp_path: Path):
    # A mix of pair counts gives the two micro-batches different numbers of valid tokens.
    data = MQARData(vocab_size=32, seq_len=24, num_kv_pairs=4, batch_size=3, seed=0, min_train_kv_pairs=1)
    assert data.train_batch(0).num_valid_tokens != data.train_batch(1).num_valid_tokens

    model = tiny_model()
    trainer = Trainer(model, data, torch.optim.SGD(model.parameters(), lr=0.0), WarmupConstant(1),
                      TrainerSettings(max_steps=1, grad_accum=2, grad_clip=None), NullTracker(), tmp_path)
    loss, grad_norm = trainer.train_step()

    reference = tiny_model()
    first, second = data.train_batch(0), data.train_batch(1)
    both = Batch(torch.cat([first.input_ids, second.input_ids]), torch.cat([first.labels, second.labels]))
    expected = summed_cross_entropy(reference(both.input_ids), both.labels) / both.num_valid_tokens
    expected.backward()
    expected_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in reference.parameters()]))

    assert abs(loss - expected.item()) < 1e-6 * abs(expected.item())
    assert abs(grad_norm - expected_norm.item()) < 1e-5 * expected_norm.item()
    assert trainer.tokens_seen == both.input_ids.numel()
