"""Apply torch.compile, activation checkpointing and FSDP2 to a LanguageModel.

    for each block: block.compile() -> checkpoint_wrapper (none | full | selective: every k-th block | op: every
    block, saving the matmul and attention outputs) -> fully_shard
    then fully_shard(model): the root group holds what is left, the embedding, final norm and LM head together.

Compile inside the checkpoint (torchtitan wraps the other way round): a block may have a graph break (a Triton mixer
whose kernels are not torch ops, below), and Dynamo cannot compile a checkpointed region with a break in it, so
compiling the checkpoint wrapper would leave the whole block eager; a compiled block inside an eager checkpoint is
compiled in the forward and in the recomputation alike.

Gradient division by FSDP is switched off: the trainer's loss is already a sum over valid tokens divided by the
GLOBAL valid-token count, so the gradients only need summing over ranks. One process gets the same checkpointing
and compilation, and no sharding.

Compiling a block whose mixer runs our Triton kernels: the GDN, Mamba2 and Mamba1 mixers' kernels (gated delta rule,
SSD, selective scan, short conv, gate, gated RMSNorm) are torch.library custom ops (torch.ops.gdn.*, with fake-tensor
shape functions and registered backwards), so Dynamo traces the whole block with the kernels as opaque nodes: no
graph break. A mixer whose Triton kernels are not torch ops (one a researcher adds, without the
`triton_kernels_are_torch_ops` flag) has its forward wrapped in torch.compiler.disable: one graph break per call.
RMSNorm runs its Triton op on CUDA compiled or not (Inductor 2.11 compiles its PyTorch backward to zero gradients);
the SwiGLU MLP switches from its Triton kernel to its PyTorch autograd function under compilation
(torch.compiler.is_compiling()), which Inductor fuses with its neighbours.
tests/train/test_compile.py counts the breaks.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

import gdn.kernels  # noqa: F401  registers the torch.ops.gdn custom ops that SAVED_OPS lists

AC_MODES = ("none", "full", "selective", "op")
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


@dataclass
class ParallelSettings:
    """trainer.parallel in the config (conf/trainer/default.yaml documents every key)."""

    dp_replicate: int = 1
    dp_shard: int = -1
    param_dtype: str = "auto"          # FSDP all-gather dtype: auto = bf16 on CUDA, fp32 on CPU
    reduce_dtype: str = "fp32"         # gradient reduce-scatter dtype
    reshard_after_forward: bool = True
    activation_checkpointing: str = "none"
    ac_every: int = 2                  # selective: checkpoint blocks 0, k, 2k, ...
    compile: str | bool = "auto"       # per-block torch.compile: auto = on for CUDA, off for CPU

    def __post_init__(self) -> None:
        if self.activation_checkpointing not in AC_MODES:
            raise ValueError(f"trainer.parallel.activation_checkpointing={self.activation_checkpointing!r}: "
                             f"choose one of {', '.join(AC_MODES)}")
        if self.ac_every < 1:
            raise ValueError(f"trainer.parallel.ac_every={self.ac_every}: must be >= 1")
        for key in ("param_dtype", "reduce_dtype"):
            if getattr(self, key) not in (*DTYPES, "auto"):
                raise ValueError(f"trainer.parallel.{key}={getattr(self, key)!r}: choose auto, bf16 or fp32")
        if self.compile not in ("auto", True, False):
            raise ValueError(f"trainer.parallel.compile={self.compile!r}: choose auto, true or false")

    def compile_enabled(self, device: torch.device) -> bool:
        return device.type == "cuda" if self.compile == "auto" else bool(self.compile)

    def mixed_precision(self, device: torch.device) -> MixedPrecisionPolicy:
        param = self.param_dtype if self.param_dtype != "auto" else ("bf16" if device.type == "cuda" else "fp32")
        reduce = self.reduce_dtype if self.reduce_dtype != "auto" else "fp32"
        return MixedPrecisionPolicy(param_dtype=DTYPES[param], reduce_dtype=DTYPES[reduce])


def runs_triton_kernels(mixer: nn.Module, device: torch.device) -> bool:
    """The mixers with a `backend` switch (GDN, Mamba2, Mamba1) run Triton kernels for "triton", and for "auto"
    on CUDA."""
    backend = getattr(mixer, "backend", None)
    return backend == "triton" or (backend == "auto" and device.type == "cuda")


def compile_block(block: nn.Module, device: torch.device, backend: str | Callable = "inductor") -> None:
    """torch.compile in place (parameter names stay those of the eager model, so checkpoints match), with a
    Triton mixer whose kernels are not torch ops kept out of the graph (one graph break per mixer call, see the
    module docstring)."""
    if runs_triton_kernels(block.mixer, device) and not getattr(block.mixer, "triton_kernels_are_torch_ops", False):
        block.mixer.forward = torch.compiler.disable(block.mixer.forward)
    block.compile(backend=backend)


def prepare_block(block: nn.Module, index: int, settings: ParallelSettings, device: torch.device,
                  compile_backend: str | Callable = "inductor") -> nn.Module:
    """The block as it trains: compiled (if on), then checkpointed (if this block is)."""
    if settings.compile_enabled(device):
        compile_block(block, device, compile_backend)
    if checkpointed(index, settings):
        block = wrap_checkpointed(block, settings.activation_checkpointing)
    return block


def checkpointed(index: int, settings: ParallelSettings) -> bool:
    mode = settings.activation_checkpointing
    return mode in ("full", "op") or (mode == "selective" and index % settings.ac_every == 0)


# Op-level selective checkpointing: the backward reuses these ops' outputs and recomputes everything else (norms,
# activations, gates: cheap elementwise work). Our Triton kernels registered as torch ops (gdn.kernels) are saved
# too: the gated delta rule's forward returns its backward's residuals, so saving it means it runs once per step.
SAVED_OPS = {
    torch.ops.aten.mm.default,
    torch.ops.aten.addmm.default,
    torch.ops.aten.bmm.default,
    torch.ops.aten._scaled_dot_product_flash_attention.default,
    torch.ops.aten._scaled_dot_product_efficient_attention.default,
    torch.ops.aten._scaled_dot_product_cudnn_attention.default,
    torch.ops.gdn.chunk_gated_delta_rule_fwd.default,
    torch.ops.gdn.chunk_ssd_fwd.default,
    torch.ops.gdn.selective_scan_fwd.default,
    torch.ops.gdn.short_conv_fwd.default,
    torch.ops.gdn.gate_fwd.default,
    torch.ops.gdn.gated_rms_norm_fwd.default,
}


def save_matmuls_policy(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if op in SAVED_OPS else CheckpointPolicy.PREFER_RECOMPUTE


def wrap_checkpointed(block: nn.Module, mode: str) -> nn.Module:
    # preserve_rng_state=False: no block uses randomness (no dropout), so skip saving the RNG per block.
    if mode == "op":
        return checkpoint_wrapper(block, preserve_rng_state=False,
                                  context_fn=partial(create_selective_checkpoint_contexts, save_matmuls_policy))
    return checkpoint_wrapper(block, preserve_rng_state=False)


def disable_gradient_division(module: nn.Module) -> None:
    """FSDP would divide reduced gradients by the number of data-parallel ranks; the loss already is global.
    A factor of 1 with plain SUM collectives: gloo has no PREMUL_SUM, which FSDP would otherwise use for it."""
    # torch >= 2.8 calls it set_gradient_divide_factor; older releases set_reduce_scatter_divide_factor.
    setter = getattr(module, "set_gradient_divide_factor", None) or module.set_reduce_scatter_divide_factor
    setter(1.0)
    if hasattr(module, "set_force_sum_reduction_for_comms"):
        module.set_force_sum_reduction_for_comms(True)


def parallelize(model: nn.Module, settings: ParallelSettings, device: torch.device,
                mesh: DeviceMesh | None = None) -> nn.Module:
    """Wrap `model` (a LanguageModel on `device`) in place and return it; mesh None = one process, no sharding."""
    for index, block in enumerate(model.blocks):
        model.blocks[index] = prepare_block(block, index, settings, device)
    if mesh is None:
        return model
    policy = settings.mixed_precision(device)
    for block in model.blocks:
        fully_shard(block, mesh=mesh, mp_policy=policy, reshard_after_forward=settings.reshard_after_forward)
    # The root is used last in the forward and first in the backward: resharding it after forward only adds an
    # all-gather, so it keeps its parameters (torchtitan does the same).
    fully_shard(model, mesh=mesh, mp_policy=policy, reshard_after_forward=False)
    for module in model.modules():
        if hasattr(module, "set_gradient_divide_factor") or hasattr(module, "set_reduce_scatter_divide_factor"):
            disable_gradient_division(module)
    return model
