"""What the kernel tests share: the device, the relative error, and a kernel's outputs and gradients against a
float64 reference's."""
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """||actual - expected|| / ||expected|| (the relative RMSE); NaN anywhere gives NaN, which fails any bound."""
    return ((actual.double() - expected.double()).norm() / expected.double().norm().clamp_min(1e-30)).item()


def outputs_and_gradients(fn, inputs: dict, output_name: str, cotangents=None, **kwargs):
    """fn's output, final state and the gradients of <output, d_out> + <final, d_final> in every input (random
    cotangents drawn on first use, returned for the reference's run)."""
    inputs = {name: x.detach().clone().requires_grad_() for name, x in inputs.items()}
    out, final = fn(**inputs, output_final_state=True, **kwargs)
    if cotangents is None:
        gen = torch.Generator(out.device).manual_seed(123)
        cotangents = [torch.randn(t.shape, generator=gen, device=out.device) for t in (out, final)]
    (out.double() * cotangents[0].double()).sum().add((final.double() * cotangents[1].double()).sum()).backward()
    results = {output_name: out.detach(), "final_state": final.detach()}
    results.update({f"d{name}": x.grad for name, x in inputs.items()})
    return results, cotangents


def compare(kernel, reference, inputs: dict, output_name: str, **kwargs) -> dict[str, float]:
    """Relative error of every output and gradient of kernel against reference run on float64 copies."""
    ours, cotangents = outputs_and_gradients(kernel, inputs, output_name, **kwargs)
    doubles = {name: x.double() for name, x in inputs.items()}
    expected, _ = outputs_and_gradients(reference, doubles, output_name, cotangents, **kwargs)
    return {name: relative_error(ours[name], expected[name]) for name in expected}


def assert_within(errors: dict[str, float], tolerance: dict[str, float]) -> None:
    failed = {name: err for name, err in errors.items() if not err < tolerance[name]}
    assert not failed, f"errors over tolerance: {failed} (all: {errors})"


def saved_bytes(fn, *args, **kwargs) -> int:
    """Bytes of the tensors fn's autograd graph keeps for the backward (each storage once, inputs included)."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*args, **kwargs)
    return sum(storages.values())
