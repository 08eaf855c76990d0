"""Shared test settings: GPU tests are marked `gpu` and skipped where CUDA is absent.

Kept free of Hydra/MLflow imports: the GPU machines run the kernel tests without those packages.
"""
import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (run on the device machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
