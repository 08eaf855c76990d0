"""The next optimizer step's host batches, read in a background thread while this step runs on the GPU.

A step's batches are a function of its data position alone (the data modules read by batch index from a seeded
order), so reading them early changes no batch: determinism and resume are as without it. The thread spends its
time in NumPy reads and copies, which release the GIL, mostly while the main thread waits for the GPU."""
from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from gdn.data.batch import Batch


class BatchPrefetcher:
    """get(position): the batches of `position`, read ahead if read_ahead(position) asked for them, else now.
    read_ahead(position): starts reading them in a background thread.

    The trainer asks for the read-ahead once the step's GPU work is queued, just before it waits for the GPU: the
    thread's Python work then runs while the main thread holds no GIL, instead of taking it from the main thread
    while it queues kernels or copies the batch (each hand-over of the GIL can cost the main thread up to the
    interpreter's 5 ms switch interval)."""

    def __init__(self, read: Callable[[int], list[Batch]], pin_memory: bool):
        self._read, self._pin_memory = read, pin_memory
        self._pool: ThreadPoolExecutor | None = None
        self._ahead: tuple[int, Future] | None = None

    def get(self, position: int) -> list[Batch]:
        if self._ahead is not None and self._ahead[0] == position:
            batches, self._ahead = self._ahead[1].result(), None
            return batches
        self._discard_ahead()
        return self._load(position)

    def read_ahead(self, position: int) -> None:
        self._discard_ahead()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gdn-batches")
        self._ahead = (position, self._pool.submit(self._load, position))

    def close(self) -> None:
        """Ends the thread (the read ahead is dropped); a later get starts another."""
        self._discard_ahead()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _load(self, position: int) -> list[Batch]:
        batches = self._read(position)
        # pinned here, off the main thread: a pinned copy to the GPU is only queued, a pageable one may wait
        return [batch.pin_memory() for batch in batches] if self._pin_memory else batches

    def _discard_ahead(self) -> None:
        """Drops a read-ahead that will not be asked for (after a resume, or at the end); its error, if any, too."""
        if self._ahead is not None:
            future, self._ahead = self._ahead[1], None
            if not future.cancel():
                future.exception()  # waits for the read; its error is not this run's
