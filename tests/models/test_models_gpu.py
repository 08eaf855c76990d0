"""The models on CUDA: the Triton backend against the PyTorch one, and a bf16-autocast training step."""
import pytest
import torch

from gdn.models import LanguageModel
from gdn.models.mixers import build_mixer

pytestmark = pytest.mark.gpu


def relative_error(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def test_gdn_triton_and_torch_backends_agree_on_cuda():
    torch.manual_seed(0)
    layers = [build_mixer("gdn", 256, num_heads=4, head_dim=64, backend=b).cuda() for b in ("torch", "auto")]
    layers[1].load_state_dict(layers[0].state_dict())
    x = torch.randn(1, 300, 256, device="cuda")
    cu_seqlens = torch.tensor([0, 100, 300], dtype=torch.int32, device="cuda")
    outputs = [layer(x, cu_seqlens=cu_seqlens)[0] for layer in layers]
    for y in outputs:
        y.pow(2).sum().backward()
    assert relative_error(outputs[1], outputs[0]) < 1e-3
    for (name, p_torch), p_auto in zip(layers[0].named_parameters(), layers[1].parameters()):
        assert relative_error(p_auto.grad, p_torch.grad) < 1e-2, name


@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_bf16_training_step_of_a_hybrid(backend):
    torch.manual_seed(0)
    mixers = {"gdn": {"num_heads": 4, "head_dim": 32, "backend": backend}, "swa": {"num_heads": 4, "window": 64}}
    model = LanguageModel(1000, 128, 2, ["gdn", "swa"], mixers).cuda()
    ids = torch.randint(0, 1000, (2, 256), device="cuda")
    cu_seqlens = torch.tensor([0, 100, 256, 512], dtype=torch.int32, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = model(ids, cu_seqlens=cu_seqlens)
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), ids.flatten())
    loss.backward()
    assert torch.isfinite(loss) and abs(loss.item() - torch.log(torch.tensor(1000.0)).item()) < 0.5
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    with torch.autocast("cuda", dtype=torch.bfloat16):
        separate = model(ids.flatten()[None, 100:256])
    assert relative_error(logits.flatten(0, 1)[100:256], separate[0]) < 2e-2
