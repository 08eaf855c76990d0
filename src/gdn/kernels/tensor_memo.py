"""What a batch's cu_seqlens tensor implies, built once and shared by every layer of a step.

The trainer moves one cu_seqlens tensor per batch to the device and every layer receives that tensor; what layers
derive from it (the chunk layout of the GDN and SSD kernels, the FlexAttention block mask) needs its values, and
reading them back to the host is a sync that lets the GPU's queue drain. TensorMemo keeps the derived value for as
long as the tensor lives unchanged, so a step reads cu_seqlens back once, not once per layer and pass.
"""
from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable
from typing import Any


class TensorMemo:
    """The last `size` values built from (tensor, key) pairs.

    A value is found again only for the very same tensor object (held by a weak reference, so that a freed tensor
    whose id or memory a new one reuses is never mistaken for it) at the same version counter (an in-place change
    misses) with an equal key. Inference tensors have no version counter: their values are built and not kept."""

    def __init__(self, size: int):
        self.size = size
        self.entries: list[tuple[weakref.ref, int, Hashable, Any]] = []  # oldest first

    def get(self, tensor, key: Hashable, build: Callable[[], Any]) -> Any:
        version = None if tensor.is_inference() else tensor._version
        for index, (ref, entry_version, entry_key, value) in enumerate(self.entries):
            if ref() is tensor and entry_version == version and entry_key == key:
                self.entries.append(self.entries.pop(index))
                return value
        value = build()
        if version is not None:
            live = [entry for entry in self.entries if entry[0]() is not None]  # a freed tensor's: never found
            self.entries = live[max(0, len(live) - self.size + 1):]  # room for the new one
            self.entries.append((weakref.ref(tensor), version, key, value))
        return value
