"""Fixtures of the kernel tests."""
import pytest
import torch


@pytest.fixture
def nan_filled_buffers(monkeypatch):
    """Buffers allocated during a test start as NaN, so any element a kernel leaves unwritten fails the test."""
    empty, empty_like = torch.empty, torch.empty_like

    def poisoned(tensor):
        return tensor.fill_(float("nan")) if tensor.is_floating_point() else tensor

    monkeypatch.setattr(torch, "empty", lambda *args, **kwargs: poisoned(empty(*args, **kwargs)))
    monkeypatch.setattr(torch, "empty_like", lambda *args, **kwargs: poisoned(empty_like(*args, **kwargs)))
