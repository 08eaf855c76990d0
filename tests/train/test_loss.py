"""The chunked LM head + cross-entropy equals F.linear + summed cross-entropy: value and gradients."""
import pytest
import torch
import torch.nn.functional as F

from gdn.models import LanguageModel
from gdn.train.loss import IGNORE_INDEX, ChunkedLossHead, chunked_linear_cross_entropy, summed_cross_entropy


def inputs(tokens=37, d=16, vocab=50, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, tokens, d, generator=g, dtype=dtype, requires_grad=True)
    weight = torch.randn(vocab, d, generator=g, dtype=dtype, requires_grad=True)
    labels = torch.randint(vocab, (2, tokens), generator=g)
    labels[0, :5] = IGNORE_INDEX
    labels[1, -3:] = IGNORE_INDEX
    return hidden, weight, labels


@pytest.mark.parametrize("chunk", [1, 8, 37, 1000])
def test_chunked_loss_and_gradients_equal_the_plain_loss(chunk):
    hidden, weight, labels = inputs()
    plain = summed_cross_entropy(F.linear(hidden, weight), labels)
    (plain * 0.5).backward()
    expected = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None

    chunked = chunked_linear_cross_entropy(hidden, weight, labels, chunk)
    (chunked * 0.5).backward()
    assert torch.allclose(chunked, plain, rtol=1e-6)
    assert torch.allclose(hidden.grad, expected[0], rtol=1e-5, atol=1e-6)
    assert torch.allclose(weight.grad, expected[1], rtol=1e-5, atol=1e-6)


def test_all_ignored_labels_give_zero_loss_and_gradient():
    hidden, weight, labels = inputs()
    loss = chunked_linear_cross_entropy(hidden, weight, torch.full_like(labels, IGNORE_INDEX), 8)
    loss.backward()
    assert loss.item() == 0 and not hidden.grad.any() and not weight.grad.any()


def test_model_with_the_chunked_head_matches_the_logits_path():
    torch.manual_seed(0)
    model = LanguageModel(vocab_size=40, d_model=16, n_layers=1, layers=["gdn"],
                          mixers={"gdn": {"num_heads": 1, "head_dim": 16, "chunk_size": 8}})
    ids = torch.randint(40, (2, 12))
    labels = torch.roll(ids, -1, dims=1)
    plain = summed_cross_entropy(model(ids), labels)
    plain.backward()
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    chunked = model(ids, head=ChunkedLossHead(labels, chunk_tokens=5))
    chunked.backward()
    assert abs(chunked.item() - plain.item()) <= 1e-6 * plain.item()
    for got, want in zip((p.grad for p in model.parameters()), expected):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-6)


def test_under_bf16_autocast_the_chunked_loss_matches_to_bf16_precision():
    hidden, weight, labels = inputs(tokens=150, d=64, vocab=300)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = summed_cross_entropy(F.linear(hidden, weight), labels)
    plain.backward()
    expected = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        chunked = chunked_linear_cross_entropy(hidden, weight, labels, 64)
    chunked.backward()
    assert abs(chunked.item() - plain.item()) <= 1e-3 * abs(plain.item())
    assert hidden.grad.dtype == torch.float32 and weight.grad.dtype == torch.float32
    for got, want in zip((hidden.grad, weight.grad), expected):
        assert (got - want).norm() <= 1e-2 * want.norm()


@pytest.mark.gpu
def test_the_compiled_chunk_loss_matches_the_eager_one_on_the_gpu():
    # What the trainer runs where it compiles the blocks: bf16 logits, 32 000 classes, ignored labels.
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(3000, 64, generator=g).cuda().requires_grad_()
    weight = (0.3 * torch.randn(32000, 64, generator=g)).cuda().requires_grad_()
    labels = torch.randint(32000, (3000,), generator=g).cuda()
    labels[:100] = IGNORE_INDEX
    results = []
    for compiled in (False, True):
        hidden.grad = weight.grad = None
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = chunked_linear_cross_entropy(hidden, weight, labels, 1024, compiled=compiled)
        loss.backward()
        results.append((loss.detach(), hidden.grad.clone(), weight.grad.clone()))
    (eager_loss, *eager_grads), (compiled_loss, *compiled_grads) = results
    assert abs(compiled_loss - eager_loss) <= 1e-5 * abs(eager_loss)
    for got, want in zip(compiled_grads, eager_grads):
        assert (got - want).norm() <= 1e-2 * want.norm()
