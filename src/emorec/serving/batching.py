"""Dynamic micro-batching: concurrent requests share one forward pass.

A CNN forward pass on a batch of 16 costs far less than 16 passes of one image (the weights are
read once, the matrix products are larger), so under load the server gathers the images of
requests that arrive together. The policy is the one TorchServe and Triton use: the first waiting
request opens a batch, which closes when it holds `max_batch` images or `max_wait_ms` after it
opened, whichever comes first. Batches run one at a time on one inference thread; requests that
arrive meanwhile queue up and form the next batch, so a busy server batches even with
`max_wait_ms=0`. `max_batch=1` turns batching off: each request gets its own forward pass.

A request is never split: one with more images than `max_batch` runs as a batch of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np


class QueueFull(Exception):
    """More images are waiting than the batcher accepts; the client should retry later (503)."""


class BatcherClosed(Exception):
    """The batcher has stopped (the server is shutting down): work submitted now fails at once."""


@dataclass
class _Item:
    arrays: np.ndarray  # (n, C, H, W)
    future: asyncio.Future


class MicroBatcher:
    """Group `submit` calls into batches for `forward` (N, C, H, W) -> (N, K) on one thread."""

    def __init__(self, forward: Callable[[np.ndarray], np.ndarray], max_batch: int = 16, max_wait_ms: float = 5.0,
                 max_queue: int = 512, on_batch: Callable[[int], None] | None = None):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.forward = forward
        self.max_batch = max_batch
        self.max_wait = max(0.0, max_wait_ms) / 1000.0
        self.max_queue = max_queue
        self.on_batch = on_batch
        # One thread: forward passes never overlap (each already uses every core through its
        # library's own threads), and a torch model with hooks is not safe to share.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="emorec-infer")
        self._queue: asyncio.Queue[_Item] | None = None
        self._task: asyncio.Task | None = None
        self._carry: _Item | None = None
        self._queued_images = 0
        self._closed = False

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run(), name="emorec-batcher")

    async def stop(self, timeout: float = 30.0) -> None:
        """Finish what is queued (for at most `timeout` seconds), then stop the loop; whatever is
        still waiting fails with BatcherClosed, and the inference thread is released."""
        self._closed = True
        if self._task is not None:
            deadline = asyncio.get_running_loop().time() + timeout
            while self._queued_images and not self._task.done() and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.01)
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self._fail_waiting()
        # No wait: a forward pass cannot be interrupted, and shutdown must not hang on one.
        self.executor.shutdown(wait=False, cancel_futures=True)

    def _fail_waiting(self) -> None:
        waiting = [self._carry] if self._carry else []
        while self._queue is not None and not self._queue.empty():
            waiting.append(self._queue.get_nowait())
        for item in waiting:
            if not item.future.done():
                item.future.set_exception(BatcherClosed("the batcher has stopped"))
        self._carry, self._queued_images = None, 0

    @property
    def closed(self) -> bool:
        return self._closed or self._task is None or self._task.done()

    async def submit(self, arrays: np.ndarray) -> np.ndarray:
        """Probabilities for `arrays` (n, C, H, W), computed in some batch with other requests."""
        if self._queue is None:
            raise RuntimeError("MicroBatcher.start() was not awaited")
        if self.closed:
            raise BatcherClosed("the batcher has stopped; no new work is taken")
        if self._queued_images + len(arrays) > self.max_queue:
            raise QueueFull(f"{self._queued_images} images are waiting (limit {self.max_queue})")
        future = asyncio.get_running_loop().create_future()
        self._queued_images += len(arrays)
        await self._queue.put(_Item(arrays, future))
        return await future

    async def run_exclusive(self, fn: Callable, *args):
        """Run `fn(*args)` on the inference thread, between batches (e.g. a Grad-CAM pass)."""
        if self.closed:
            raise BatcherClosed("the batcher has stopped; no new work is taken")
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def _next_batch(self) -> list[_Item]:
        first = self._carry or await self._queue.get()
        self._carry = None
        items, count = [first], len(first.arrays)
        deadline = asyncio.get_running_loop().time() + self.max_wait
        while count < self.max_batch:
            if self._queue.empty():
                timeout = deadline - asyncio.get_running_loop().time()
                if timeout <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), timeout)
                except TimeoutError:
                    break
            else:
                item = self._queue.get_nowait()
            if count + len(item.arrays) > self.max_batch:
                self._carry = item  # opens the next batch: requests are not split
                break
            items.append(item)
            count += len(item.arrays)
        return items

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = await self._next_batch()
            live = [it for it in items if not it.future.done()]  # a client that went away
            n = sum(len(it.arrays) for it in items)
            try:
                if live:
                    batch = np.concatenate([it.arrays for it in live]) if len(live) > 1 else live[0].arrays
                    probs = await loop.run_in_executor(self.executor, self.forward, batch)
                    if self.on_batch:
                        self.on_batch(len(batch))
                    start = 0
                    for it in live:
                        end = start + len(it.arrays)
                        if not it.future.done():
                            it.future.set_result(probs[start:end])
                        start = end
            except Exception as e:  # noqa: BLE001 - one failed batch fails its requests, not the server
                for it in live:
                    if not it.future.done():
                        it.future.set_exception(e)
            except asyncio.CancelledError:  # stopped mid-batch: its requests fail now, not never
                for it in live:
                    if not it.future.done():
                        it.future.set_exception(BatcherClosed("the batcher stopped during this batch"))
                raise
            finally:
                self._queued_images -= n
