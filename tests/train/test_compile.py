"""Graph breaks of a compiled block (torch._dynamo.explain): none on the PyTorch path of the GDN mixer, exactly one
per mixer call when the mixer runs the Triton kernels and is kept out of the graph (gdn.train.parallelize)."""
import torch

from gdn.models import LanguageModel
from gdn.train.parallelize import runs_triton_kernels


def gdn_block(backend: str):
    torch.manual_seed(0)
    model = LanguageModel(vocab_size=64, d_model=32, n_layers=1, layers=["gdn"],
                          mixers={"gdn": {"num_heads": 2, "head_dim": 16, "chunk_size": 8, "backend": backend}})
    return model.blocks[0]


def graph_breaks(block, *args) -> int:
    torch._dynamo.reset()
    return torch._dynamo.explain(block)(*args).graph_break_count


def test_the_pytorch_gdn_block_compiles_without_a_graph_break():
    block = gdn_block("torch")
    assert not runs_triton_kernels(block.mixer, torch.device("cpu"))
    assert graph_breaks(block, torch.randn(2, 24, 32)) == 0


def test_a_mixer_kept_out_of_the_graph_breaks_it_once_per_call():
    # What compile_block does for a Triton mixer, on the PyTorch path (the CPU cannot trace the Triton interpreter).
    block = gdn_block("torch")
    block.mixer.forward = torch.compiler.disable(block.mixer.forward)
    x = torch.randn(2, 24, 32)
    assert graph_breaks(block, x) == 1
    with torch.no_grad():
        reference = gdn_block("torch")(x)
        assert torch.allclose(block(x), reference, atol=1e-6)


def test_triton_mixers_are_recognised():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert runs_triton_kernels(gdn_block("auto").mixer, cuda) and not runs_triton_kernels(gdn_block("auto").mixer, cpu)
    assert runs_triton_kernels(gdn_block("triton").mixer, cpu)


def test_activation_checkpointing_leaves_the_losses_unchanged(compose_config, tmp_path):
    from gdn.train.main import run

    steps = ["trainer.max_steps=4", "trainer.eval_every=4", "trainer.checkpoint_every=4", "model.n_layers=4"]
    plain = run(compose_config(*steps), tmp_path / "none").losses
    for mode in ("full", "selective", "op"):
        cfg = compose_config(*steps, f"trainer.parallel.activation_checkpointing={mode}")
        losses = run(cfg, tmp_path / mode).losses
        assert losses == plain, mode  # recomputation repeats the same float operations


def test_selective_checkpointing_wraps_every_kth_block_and_keeps_the_parameter_names():
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper

    from gdn.train.parallelize import ParallelSettings, parallelize

    model = LanguageModel(vocab_size=64, d_model=32, n_layers=4, layers=["gdn"],
                          mixers={"gdn": {"num_heads": 2, "head_dim": 16}})
    names = list(model.state_dict())
    parallelize(model, ParallelSettings(activation_checkpointing="selective", ac_every=2), torch.device("cpu"))
    assert [isinstance(b, CheckpointWrapper) for b in model.blocks] == [True, False, True, False]
    assert list(model.state_dict()) == names


def test_a_checkpointed_block_with_a_triton_mixer_is_still_compiled():
    from torch._dynamo.testing import CompileCounter

    from gdn.train.parallelize import ParallelSettings, prepare_block

    x = torch.randn(1, 16, 32, requires_grad=True)
    eager = gdn_block("triton")
    expected = eager(x)
    expected.square().sum().backward()
    torch._dynamo.reset()
    counter = CompileCounter()
    block = prepare_block(gdn_block("triton"), 0, ParallelSettings(activation_checkpointing="full", compile=True),
                          torch.device("cpu"), compile_backend=counter)
    y = block(x)
    y.square().sum().backward()
    assert counter.frame_count >= 1 and counter.op_count > 0  # norms, residual and MLP in compiled graphs
    assert torch.allclose(y, expected, atol=1e-6)
    grads = dict(block.named_parameters())
    for name, param in eager.named_parameters():
        assert torch.allclose(grads[name].grad, param.grad, atol=1e-5), name
