"""MicroBatcher: concurrent requests share forward passes, each gets its own rows back."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from emorec.serving.batching import MicroBatcher, QueueFull


def rows(request: int, n: int = 1) -> np.ndarray:
    """n 'images' whose pixels all equal the request number, so answers can be traced back."""
    return np.full((n, 1, 2, 2), float(request), np.float32)


class Recorder:
    def __init__(self, fail_when=None):
        self.sizes, self.fail_when = [], fail_when

    def __call__(self, batch):
        self.sizes.append(len(batch))
        if self.fail_when is not None and self.fail_when(batch):
            raise RuntimeError("forward failed")
        return batch.reshape(len(batch), -1)[:, :1] * 10  # (n, 1): the request number x 10


def run(batcher: MicroBatcher, requests: dict[int, int]):
    async def main():
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(rows(r, n)) for r, n in requests.items()), return_exceptions=True)
        finally:
            await batcher.stop()

    return asyncio.run(main())


def test_concurrent_requests_share_one_forward_pass_and_get_their_own_rows():
    forward = Recorder()
    answers = run(MicroBatcher(forward, max_batch=8, max_wait_ms=200), {r: 1 for r in range(8)})
    assert forward.sizes == [8]
    assert [a.ravel().tolist() for a in answers] == [[10.0 * r] for r in range(8)]


def test_max_batch_one_turns_batching_off():
    forward = Recorder()
    run(MicroBatcher(forward, max_batch=1, max_wait_ms=200), {r: 1 for r in range(5)})
    assert forward.sizes == [1] * 5


def test_batches_close_at_max_batch_and_requests_are_never_split():
    forward = Recorder()
    answers = run(MicroBatcher(forward, max_batch=4, max_wait_ms=200), {0: 3, 1: 3, 2: 6, 3: 1})
    assert forward.sizes == [3, 3, 6, 1]  # 3 + 3 > 4: the second request opens the next batch
    assert [a.ravel().tolist() for a in answers] == [[0.0] * 3, [10.0] * 3, [20.0] * 6, [30.0]]


def test_a_failed_batch_fails_its_requests_and_the_next_batch_still_runs():
    forward = Recorder(fail_when=lambda batch: (batch == 1).any())

    async def main():
        batcher = MicroBatcher(forward, max_batch=2, max_wait_ms=100)
        await batcher.start()
        first = await asyncio.gather(batcher.submit(rows(1)), batcher.submit(rows(2)), return_exceptions=True)
        second = await batcher.submit(rows(3))
        await batcher.stop()
        return first, second

    first, second = asyncio.run(main())
    assert all(isinstance(a, RuntimeError) for a in first)
    assert second.ravel().tolist() == [30.0]


def test_a_full_queue_refuses_new_work():
    answers = run(MicroBatcher(Recorder(), max_batch=2, max_wait_ms=50, max_queue=4), {0: 2, 1: 2, 2: 1})
    assert isinstance(answers[2], QueueFull)
    assert [a.ravel().tolist() for a in answers[:2]] == [[0.0, 0.0], [10.0, 10.0]]


def test_max_batch_must_be_positive():
    with pytest.raises(ValueError):
        MicroBatcher(Recorder(), max_batch=0)


def test_work_submitted_after_the_batcher_stopped_or_was_cancelled_fails_at_once():
    from emorec.serving.batching import BatcherClosed

    async def main():
        stopped = MicroBatcher(Recorder())
        await stopped.start()
        await stopped.stop()
        cancelled = MicroBatcher(Recorder())
        await cancelled.start()
        cancelled._task.cancel()
        await asyncio.sleep(0)
        outcomes = []
        for batcher in (stopped, cancelled):
            try:
                await asyncio.wait_for(batcher.submit(rows(1)), 1.0)  # before the fix: waited for ever
            except BatcherClosed:
                outcomes.append("closed")
        return outcomes

    assert asyncio.run(main()) == ["closed", "closed"]


def test_stop_is_bounded_by_its_timeout_and_fails_what_still_waits():
    import threading

    from emorec.serving.batching import BatcherClosed

    release = threading.Event()

    def stuck(batch):
        release.wait(5)  # a forward pass that does not finish within the shutdown's time
        return batch.reshape(len(batch), -1)[:, :1]

    async def main():
        batcher = MicroBatcher(stuck, max_batch=1, max_wait_ms=0)
        await batcher.start()
        first = asyncio.ensure_future(batcher.submit(rows(1)))
        waiting = asyncio.ensure_future(batcher.submit(rows(2)))
        await asyncio.sleep(0.1)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await batcher.stop(timeout=0.3)
        took = loop.time() - started
        results = await asyncio.gather(first, waiting, return_exceptions=True)
        release.set()
        return took, results

    took, results = asyncio.run(main())
    assert took < 2.0
    assert all(isinstance(r, (BatcherClosed, asyncio.CancelledError)) for r in results), results
