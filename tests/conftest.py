"""Shared test settings.

- Without CUDA, Triton kernels run in the interpreter: TRITON_INTERPRET=1 is set here, before any test module
  imports triton (the flag is read when a kernel is decorated), so test order never matters.
- GPU tests are marked `gpu` and skipped where CUDA is absent.
Kept free of Hydra/MLflow imports: the GPU machines run the kernel tests without those packages.
"""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (run on the device machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
