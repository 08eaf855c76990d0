"""The next optimizer step's host batches, read in a background thread while this step runs.

A step's batches are a function of its data position alone (the data modules read by batch index from a seeded
order), so reading them early changes no batch: determinism and resume are as without it. The thread spends its
time in NumPy reads and copies, which release the GIL, mostly while the main thread waits for the GPU."""
from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from gdn.data.batch import Batch


class BatchPrefetcher:
    """get(position, next_position): the batches of `position` (read ahead by the previous call when it asked for
    this position, else now), and starts reading those of `next_position`."""

    def __init__(self, read: Callable[[int], list[Batch]], pin_memory: bool):
        self._read, self._pin_memory = read, pin_memory
        self._pool: ThreadPoolExecutor | None = None
        self._ahead: tuple[int, Future] | None = None

    def get(self, position: int, next_position: int) -> list[Batch]:
        if self._ahead is not None and self._ahead[0] == position:
            batches = self._ahead[1].result()
        else:
            self._discard_ahead()
            batches = self._load(position)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gdn-batches")
        self._ahead = (next_position, self._pool.submit(self._load, next_position))
        return batches

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
