"""Dynamic batching: concurrent requests grouped into one call of the model.

As Triton's dynamic batcher: each request waits in a bounded queue; one worker takes the
oldest and adds whatever else is waiting, up to ``max_batch`` images. It waits up to
``max_delay_ms`` for more only when asked: by default a lone request runs at once (no
latency added at low load), and under load a batch is whatever queued while the previous
one ran. A full queue refuses at once (:class:`Overloaded`: HTTP 503), a request that
waits past its timeout is dropped (:class:`TimedOut`: HTTP 504) and skipped by the worker.
The model runs on one thread of its own, so the event loop stays free to accept requests.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from .metrics import Metrics

__all__ = ["Batcher", "Overloaded", "TimedOut"]


class Overloaded(Exception):
    """The queue is full: try again later."""


class TimedOut(Exception):
    """The answer did not come within the request's timeout."""


@dataclass(eq=False)
class _Request:
    inputs: torch.Tensor  # (n, ...) rows of one request
    future: asyncio.Future[torch.Tensor]
    queued_at: float = field(default_factory=time.perf_counter)


class Batcher:
    """Runs ``run`` (a batch of inputs -> a batch of outputs, row for row) on batches of
    the requests given to :meth:`submit`. :meth:`start` and :meth:`stop` bracket its life
    in the event loop that serves the requests."""

    def __init__(
        self,
        run: Callable[[torch.Tensor], torch.Tensor],
        *,
        max_batch: int = 8,
        max_delay_ms: float = 0.0,
        max_queue: int = 64,
        metrics: Metrics | None = None,
    ) -> None:
        for name, value, least in (("max_batch", max_batch, 1), ("max_queue", max_queue, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name}={value!r}: must be an integer >= {least}")
        if not 0 <= max_delay_ms <= 10_000:
            raise ValueError(f"max_delay_ms={max_delay_ms!r}: must be in [0, 10000]")
        self.run, self.max_batch, self.max_queue = run, max_batch, max_queue
        self.max_delay = max_delay_ms / 1000
        self.metrics = metrics
        self._waiting: deque[_Request] = deque()
        self._arrived: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="mobilenet-v1-model")

    @property
    def running(self) -> bool:
        return self._worker is not None and not self._worker.done()

    @property
    def depth(self) -> int:
        """Requests waiting (not counting the batch being computed)."""
        return len(self._waiting)

    async def start(self) -> None:
        self._arrived = asyncio.Event()
        self._worker = asyncio.create_task(self._work(), name="mobilenet-v1-batcher")

    async def stop(self) -> None:
        """Stop the worker once what is queued has been answered (the server stops taking
        requests first)."""
        while self._waiting and self.running:
            await asyncio.sleep(0.01)
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        self._executor.shutdown(wait=True)

    async def submit(self, inputs: torch.Tensor, timeout_s: float) -> torch.Tensor:
        """The outputs of ``inputs`` (one request of ``len(inputs)`` rows), computed in a
        batch with whatever else is waiting."""
        if not self.running or self._arrived is None:
            raise Overloaded("the server is not ready")
        if len(inputs) > self.max_batch:
            raise ValueError(f"a batch of {len(inputs)} is more than the server's max_batch={self.max_batch}")
        if len(self._waiting) >= self.max_queue:
            raise Overloaded(f"the queue is full ({self.max_queue} requests waiting)")
        request = _Request(inputs, asyncio.get_running_loop().create_future())
        self._waiting.append(request)
        self._arrived.set()
        self._observe_depth()
        try:
            return await asyncio.wait_for(request.future, timeout_s)
        except TimeoutError:
            raise TimedOut(f"no answer within the timeout ({timeout_s * 1000:g} ms)") from None

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            if not batch:
                continue
            inputs = batch[0].inputs if len(batch) == 1 else torch.cat([r.inputs for r in batch])
            started = time.perf_counter()
            try:
                outputs = await loop.run_in_executor(self._executor, self.run, inputs)
            except Exception as exc:  # the model's error is every request's answer
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(exc)
                continue
            if self.metrics:
                self.metrics.batch(len(inputs), [started - r.queued_at for r in batch], time.perf_counter() - started)
            offset = 0
            for request in batch:
                rows = len(request.inputs)
                if not request.future.done():  # not timed out or disconnected meanwhile
                    request.future.set_result(outputs[offset : offset + rows])
                offset += rows

    async def _next_batch(self) -> list[_Request]:
        """The oldest request and what else fits, waiting up to ``max_delay`` for more."""
        assert self._arrived is not None
        while not self._waiting:
            self._arrived.clear()
            await self._arrived.wait()
        first = self._waiting.popleft()
        batch, rows = [first], len(first.inputs)
        deadline = first.queued_at + self.max_delay
        while rows < self.max_batch:
            if not self._waiting:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), left)
                except TimeoutError:
                    break
                continue
            if rows + len(self._waiting[0].inputs) > self.max_batch:
                break  # the next request starts the next batch
            request = self._waiting.popleft()
            batch.append(request)
            rows += len(request.inputs)
        self._observe_depth()
        return [r for r in batch if not r.future.done()]

    def _observe_depth(self) -> None:
        if self.metrics:
            self.metrics.queue_depth.set(len(self._waiting))
