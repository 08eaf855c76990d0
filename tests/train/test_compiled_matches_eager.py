"""A block compiled as the trainer compiles it (Inductor) computes what the eager block computes: the output and every
gradient, for each architecture, over packed documents. On CUDA, torch 2.11's Inductor got two of our PyTorch
pieces wrong while the CPU got them right: a searchsorted over a slice of cu_seqlens (every document index one too
high, so the PyTorch short convolution masked all its taps) and RMSNormFunction's backward (zero gradients). The CPU
cases check the harness and the CPU paths; the GPU cases are the ones that found those bugs."""
from __future__ import annotations

import pytest
import torch

from gdn.models import LanguageModel
from gdn.models.config_files import model_kwargs
from gdn.models.documents import document_ids, positions_in_documents
from gdn.train.parallelize import compile_block

CU_SEQLENS = [0, 5, 37, 38, 90, 128]  # a one-token document among them


def relative(x: torch.Tensor, ref: torch.Tensor) -> float:
    return ((x - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def block_output_and_gradients(block, x, cu_seqlens, cotangent):
    x = x.detach().clone().requires_grad_()
    out = block(x, cu_seqlens, **block.host_inputs(x.shape[1], x.device, cu_seqlens))  # as LanguageModel calls it
    out.backward(cotangent)
    return out.detach(), {"input": x.grad, **{name: p.grad for name, p in block.named_parameters()}}


def check_compiled_block(model_name: str, device: torch.device, backend: str) -> None:
    kwargs = model_kwargs(model_name, "tiny", vocab_size=64)
    for mixer in kwargs["mixers"].values():
        if "backend" in mixer:
            mixer["backend"] = backend
    torch.manual_seed(0)
    model = LanguageModel(**kwargs).to(device)
    cu_seqlens = torch.tensor(CU_SEQLENS, dtype=torch.int32, device=device)
    x = torch.randn(1, CU_SEQLENS[-1], kwargs["d_model"], device=device)
    cotangent = torch.randn_like(x)
    for index, eager in enumerate(model.blocks):
        compiled = LanguageModel(**kwargs).to(device).blocks[index]
        compiled.load_state_dict(eager.state_dict())
        torch._dynamo.reset()
        compile_block(compiled, device)
        out_e, grads_e = block_output_and_gradients(eager, x, cu_seqlens, cotangent)
        out_c, grads_c = block_output_and_gradients(compiled, x, cu_seqlens, cotangent)
        assert relative(out_c, out_e) < 1e-5, f"{model_name} block {index}: output"
        for name, grad in grads_e.items():
            assert grads_c[name] is not None, f"{model_name} block {index}: no gradient for {name}"
            assert relative(grads_c[name], grad) < 1e-4, f"{model_name} block {index}: gradient of {name}"


@pytest.mark.slow
@pytest.mark.parametrize("model_name", ["gdn", "gdn_h2"])
def test_compiled_blocks_match_eager_on_the_cpu(model_name):
    check_compiled_block(model_name, torch.device("cpu"), "torch")


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("model_name", ["gdn", "gdn_h1", "gdn_h2", "mamba2", "samba", "transformer", "deltanet"])
def test_compiled_blocks_match_eager_on_the_gpu(model_name, backend):
    check_compiled_block(model_name, torch.device("cuda"), backend)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_compiled_document_positions_are_the_eager_ones(device):
    cu_seqlens = torch.tensor(CU_SEQLENS, dtype=torch.int32, device=device)
    torch._dynamo.reset()
    ids = torch.compile(document_ids)(cu_seqlens, CU_SEQLENS[-1])
    positions = torch.compile(positions_in_documents)(cu_seqlens, CU_SEQLENS[-1])
    expected_ids = torch.repeat_interleave(torch.arange(5), torch.tensor([5, 32, 1, 52, 38]))
    assert ids.cpu().tolist() == expected_ids.tolist()
    starts = torch.tensor(CU_SEQLENS[:-1])[expected_ids]
    assert positions.cpu().tolist() == (torch.arange(CU_SEQLENS[-1]) - starts).tolist()
