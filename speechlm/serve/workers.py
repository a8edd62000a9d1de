"""Model workers with a bounded queue and dynamic batching.

Each model runs on its own thread so inference never blocks the event loop. Requests wait in a
queue of fixed size; when it is full, :meth:`BatchWorker.submit` raises :class:`Overloaded`
at once (the server answers 429) instead of queueing without limit. The worker takes every
request waiting when it becomes free (up to ``max_batch``) and runs them as one batch: under
load, concurrent transcriptions share one forward pass.
"""

from __future__ import annotations

import asyncio
import math
import queue
import threading
import time
from typing import Any, Callable, Sequence


class Overloaded(Exception):
    """The worker's queue is full; ``retry_after`` estimates the seconds until it has room."""

    def __init__(self, name: str, retry_after: int):
        super().__init__(f"the {name} worker is at capacity; retry in {retry_after} s")
        self.retry_after = retry_after


class BatchWorker:
    """Runs ``fn(items) -> results`` (same length, same order) on one thread, in batches.

    max_batch: most requests run together; queue_size: most requests waiting (not counting the
    batch in progress). ``depth`` is the number of requests waiting or running.
    """

    def __init__(
        self, name: str, fn: Callable[[Sequence[Any]], Sequence[Any]], max_batch: int = 8, queue_size: int = 16,
        initializer: Callable[[], None] | None = None,
    ):  # fmt: skip
        if max_batch < 1 or queue_size < 1:
            raise ValueError(f"{name} worker: max_batch and queue_size must be >= 1")
        self.name = name
        self.fn = fn
        self.initializer = initializer  # run once on the worker thread before the first batch
        self.max_batch = max_batch
        self.queue_size = queue_size
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._running = 0  # requests in the batch being computed
        self._seconds_per_batch = 0.1  # running mean, for Retry-After
        self._thread = threading.Thread(target=self._loop, name=f"speechlm-{name}", daemon=True)
        self._stopped = False
        self._thread.start()

    @property
    def depth(self) -> int:
        with self._lock:
            return self._queue.qsize() + self._running

    @property
    def capacity(self) -> int:
        return self.queue_size + self.max_batch

    def check_capacity(self) -> None:
        """Raise :class:`Overloaded` now if a request would not fit the queue: callers refuse
        work before spending time reading and decoding its upload."""
        if self._queue.full():
            raise Overloaded(self.name, self.retry_after())

    def retry_after(self) -> int:
        batches_ahead = math.ceil((self._queue.qsize() + 1) / self.max_batch)
        return max(1, math.ceil(batches_ahead * self._seconds_per_batch))

    async def submit(self, item: Any) -> Any:
        """Queue ``item`` and wait for its result; raises :class:`Overloaded` when the queue is full,
        or the exception ``fn`` raised for this batch."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        try:
            self._queue.put_nowait((item, future, loop))
        except queue.Full:
            raise Overloaded(self.name, self.retry_after()) from None
        return await future

    def _loop(self) -> None:
        if self.initializer is not None:
            self.initializer()
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(nxt)
            with self._lock:
                self._running = len(batch)
            start = time.perf_counter()
            try:
                results = self.fn([item for item, _, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"{self.name} worker returned {len(results)} results for {len(batch)} requests")
                outcome = [(True, r) for r in results]
            except Exception as e:  # delivered to every waiting request of this batch
                outcome = [(False, e)] * len(batch)
            self._seconds_per_batch = 0.8 * self._seconds_per_batch + 0.2 * (time.perf_counter() - start)
            with self._lock:
                self._running = 0
            for (_, future, loop), (ok, value) in zip(batch, outcome):
                loop.call_soon_threadsafe(_resolve, future, ok, value)

    def close(self, timeout: float = 5.0) -> None:
        if not self._stopped:
            self._stopped = True
            self._queue.put(None)
            self._thread.join(timeout)


def _resolve(future: asyncio.Future, ok: bool, value: Any) -> None:
    if future.cancelled():  # the request timed out or the client went away
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
