"""Graph breaks of a compiled block (torch._dynamo.explain): none for the GDN mixer on either path and for the Triton
Mamba2 and Mamba1 mixers (their Triton kernels are torch.ops.gdn custom ops), exactly one per mixer call for a mixer
kept out of the graph (what gdn.train.parallelize does to a mixer whose kernels are not ops); and op-level selective
checkpointing saves the gated delta rule kernel instead of running it again."""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before any kernel import, as in tests/conftest.py

import pytest

from gdn.models import LanguageModel
from gdn.train.parallelize import runs_triton_kernels


def gdn_block(backend: str, recompute_states: bool = False):
    torch.manual_seed(0)
    model = LanguageModel(vocab_size=64, d_model=32, n_layers=1, layers=["gdn"],
                          mixers={"gdn": {"num_heads": 2, "head_dim": 16, "chunk_size": 8, "backend": backend,
                                          "recompute_states": recompute_states}})
    return model.blocks[0]


def assert_matches_eager(block, eager, *inputs) -> None:
    """block(*inputs) and its parameter gradients equal those of the eager block (built from the same seed)."""
    expected = eager(*inputs)
    expected.square().sum().backward()
    y = block(*inputs)
    y.square().sum().backward()
    assert torch.allclose(y, expected, atol=1e-6)
    grads = dict(block.named_parameters())
    for name, param in eager.named_parameters():
        assert torch.allclose(grads[name].grad, param.grad, atol=1e-5), name


def graph_breaks(block, *args, **kwargs) -> int:
    torch._dynamo.reset()
    return torch._dynamo.explain(block)(*args, **kwargs).graph_break_count


def test_the_pytorch_gdn_block_compiles_without_a_graph_break():
    block = gdn_block("torch")
    assert not runs_triton_kernels(block.mixer, torch.device("cpu"))
    assert graph_breaks(block, torch.randn(2, 24, 32)) == 0


@pytest.mark.parametrize("cu_seqlens", [None, [0, 10, 24]])
def test_the_triton_gdn_block_compiles_without_a_graph_break(cu_seqlens):
    # Packed documents too: the op checks cu_seqlens' values inside, and its outputs' shapes need only its length.
    block = gdn_block("triton")
    assert runs_triton_kernels(block.mixer, torch.device("cpu"))
    if cu_seqlens is None:
        assert graph_breaks(block, torch.randn(2, 24, 32)) == 0
    else:
        assert graph_breaks(block, torch.randn(1, 24, 32), torch.tensor(cu_seqlens, dtype=torch.int32)) == 0


def test_the_triton_gdn_block_compiled_through_aot_autograd_matches_eager():
    # aot_eager traces forward and backward with fake tensors: the ops' fake functions and registered backwards.
    from gdn.train.parallelize import compile_block

    torch._dynamo.reset()
    block = gdn_block("triton")
    compile_block(block, torch.device("cpu"), backend="aot_eager")
    assert_matches_eager(block, gdn_block("triton"), torch.randn(2, 24, 32, requires_grad=True))


MAMBA_MIXERS = {"mamba2": {"headdim": 16, "d_state": 8, "backend": "triton"},  # short conv, SSD, gated norm
                 "mamba": {"d_state": 8, "backend": "triton"}}  # Mamba1: short conv, selective scan


@pytest.mark.parametrize("layer", list(MAMBA_MIXERS))
@pytest.mark.parametrize("cu_seqlens", [None, [0, 10, 24]])
def test_the_triton_mamba_blocks_compile_without_a_graph_break_and_match_eager(layer, cu_seqlens):
    # Their Triton kernels are torch.ops.gdn custom ops too.
    from gdn.train.parallelize import compile_block

    def mamba_block():
        torch.manual_seed(0)
        model = LanguageModel(vocab_size=64, d_model=32, n_layers=1, layers=[layer],
                              mixers={layer: MAMBA_MIXERS[layer]})
        return model.blocks[0]

    x = torch.randn(1 if cu_seqlens else 2, 24, 32, requires_grad=True)
    packed = None if cu_seqlens is None else torch.tensor(cu_seqlens, dtype=torch.int32)
    assert graph_breaks(mamba_block(), x, packed) == 0
    torch._dynamo.reset()
    block = mamba_block()
    compile_block(block, torch.device("cpu"), backend="aot_eager")
    assert_matches_eager(block, mamba_block(), x, packed)


def test_a_mixer_kept_out_of_the_graph_breaks_it_once_per_call():
    # What compile_block does for a mixer whose Triton kernels are not torch ops (one a researcher adds), on the GDN
    # block.
    block = gdn_block("torch")
    block.mixer.forward = torch.compiler.disable(block.mixer.forward)
    x = torch.randn(2, 24, 32)
    assert graph_breaks(block, x) == 1
    with torch.no_grad():
        reference = gdn_block("torch")(x)
        assert torch.allclose(block(x), reference, atol=1e-6)


@pytest.mark.parametrize("layer, cu_seqlens", [("attn", [0, 10, 24]), ("swa", None)])
def test_an_attention_block_given_its_host_inputs_compiles_without_a_graph_break(layer, cu_seqlens):
    # The FlexAttention path (forward only: its backward is GPU-only) with a mask: packed documents, or a window
    # shorter than the row. The block mask comes from host_inputs, as LanguageModel.forward passes it; looked up
    # inside the block instead, it splits the block into five graphs.
    torch.manual_seed(0)
    model = LanguageModel(vocab_size=64, d_model=32, n_layers=1, layers=[layer],
                          mixers={layer: {"num_heads": 2, "backend": "flex", **({"window": 8} if layer == "swa" else {})}})
    block = model.blocks[0].requires_grad_(False)
    x = torch.randn(1, 24, 32)
    packed = None if cu_seqlens is None else torch.tensor(cu_seqlens, dtype=torch.int32)
    host_inputs = block.host_inputs(24, x.device, packed)
    assert set(host_inputs) == {"block_mask"}
    assert graph_breaks(block, x, packed, **host_inputs) == 0
    assert graph_breaks(block, x, packed) == 4
    assert torch.equal(block(x, packed, **host_inputs), block(x, packed))


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

    torch._dynamo.reset()
    counter = CompileCounter()
    block = prepare_block(gdn_block("triton"), 0, ParallelSettings(activation_checkpointing="full", compile=True),
                          torch.device("cpu"), compile_backend=counter)
    assert_matches_eager(block, gdn_block("triton"), torch.randn(1, 16, 32, requires_grad=True))
    assert counter.frame_count >= 1 and counter.op_count > 0  # norms, residual and MLP in compiled graphs


@pytest.mark.parametrize("mode,recompute_states,kernel_runs", [("none", False, 1), ("op", False, 1), ("full", False, 2),
                                                                ("op", True, 2), ("full", True, 3)])
def test_op_level_checkpointing_saves_the_delta_rule_kernel(monkeypatch, mode, recompute_states, kernel_runs):
    """Forward kernel runs in one forward + backward step of a checkpointed Triton GDN block: op-level SAC keeps
    torch.ops.gdn.chunk_gated_delta_rule_fwd's outputs (SAVED_OPS), full checkpointing runs it again; with
    recompute_states the backward op rebuilds the states once more (one WY pass). The gradients equal those without
    checkpointing."""
    from gdn.kernels.gated_delta import chunk
    from gdn.train.parallelize import ParallelSettings, prepare_block

    runs = []
    wy_forward = chunk.wy_forward  # the delta rule forward's first stage, called once per forward kernel run

    def counted(*args, **kwargs):
        runs.append(1)
        return wy_forward(*args, **kwargs)

    x = torch.randn(1, 20, 32, requires_grad=True)
    plain = gdn_block("triton", recompute_states)
    plain(x).square().sum().backward()
    monkeypatch.setattr(chunk, "wy_forward", counted)
    settings = ParallelSettings(activation_checkpointing=mode, compile=False)
    block = prepare_block(gdn_block("triton", recompute_states), 0, settings, torch.device("cpu"))
    block(x).square().sum().backward()
    assert len(runs) == kernel_runs
    grads = dict(block.named_parameters())
    for name, param in plain.named_parameters():
        assert torch.equal(grads[name].grad, param.grad), name
