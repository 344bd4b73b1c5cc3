"""The dynamic batcher: batches of what waits, bounded queue, timeouts, errors."""

import asyncio

import pytest
import torch

from mobilenet_v1.serve.batcher import Batcher, Overloaded, TimedOut


def _run(coro):
    return asyncio.run(coro)


def test_concurrent_requests_share_a_batch_and_get_their_own_rows():
    sizes = []

    def model(x):
        sizes.append(len(x))
        return x * 2

    async def scenario():
        batcher = Batcher(model, max_batch=8, max_delay_ms=50)
        await batcher.start()
        inputs = [torch.full((1, 2), float(i)) for i in range(6)]
        outs = await asyncio.gather(*(batcher.submit(x, 5.0) for x in inputs))
        await batcher.stop()
        return inputs, outs

    inputs, outs = _run(scenario())
    for x, y in zip(inputs, outs, strict=True):
        assert torch.equal(y, x * 2)
    assert sum(sizes) == 6 and max(sizes) > 1  # grouped, every row answered once


def test_a_lone_request_runs_at_once_without_delay():
    async def scenario():
        batcher = Batcher(lambda x: x, max_batch=8, max_delay_ms=0)
        await batcher.start()
        loop = asyncio.get_running_loop()
        start = loop.time()
        await batcher.submit(torch.zeros(1, 1), 5.0)
        took = loop.time() - start
        await batcher.stop()
        return took

    assert _run(scenario()) < 0.5  # no max_delay wait (0.5 s: far above a thread hop, below any stall)


def test_batches_never_exceed_max_batch_and_a_big_request_is_refused():
    sizes = []

    async def scenario():
        batcher = Batcher(lambda x: sizes.append(len(x)) or x, max_batch=4, max_delay_ms=20)
        await batcher.start()
        await asyncio.gather(*(batcher.submit(torch.zeros(3, 1), 5.0) for _ in range(4)))
        with pytest.raises(ValueError, match="max_batch=4"):
            await batcher.submit(torch.zeros(5, 1), 5.0)
        await batcher.stop()

    _run(scenario())
    assert sizes and max(sizes) <= 4 and sum(sizes) == 12


def test_full_queue_is_overloaded_and_waiting_past_the_timeout_is_timed_out():
    release = asyncio.Event

    async def scenario():
        gate = release()
        loop = asyncio.get_running_loop()

        def slow(x):
            asyncio.run_coroutine_threadsafe(gate.wait(), loop).result()
            return x

        batcher = Batcher(slow, max_batch=1, max_queue=2)
        await batcher.start()
        first = asyncio.create_task(batcher.submit(torch.zeros(1, 1), 5.0))  # occupies the model
        await asyncio.sleep(0.05)
        queued = [asyncio.create_task(batcher.submit(torch.zeros(1, 1), 5.0)) for _ in range(2)]
        await asyncio.sleep(0.01)
        with pytest.raises(Overloaded, match="queue is full"):
            await batcher.submit(torch.zeros(1, 1), 5.0)
        late = asyncio.create_task(batcher.submit(torch.zeros(1, 1), 0.05))
        await asyncio.sleep(0)
        gate.set()
        results = await asyncio.gather(first, *queued, late, return_exceptions=True)
        await batcher.stop()
        return results

    results = _run(scenario())
    assert all(isinstance(r, torch.Tensor) for r in results[:3])
    assert isinstance(results[3], Overloaded | TimedOut)  # queue full again, or waited past 50 ms


def test_a_model_error_is_every_waiting_requests_answer_and_the_worker_goes_on():
    calls = []

    def flaky(x):
        calls.append(len(x))
        if len(calls) == 1:
            raise ValueError("bad outputs")
        return x

    async def scenario():
        batcher = Batcher(flaky, max_batch=4)
        await batcher.start()
        with pytest.raises(ValueError, match="bad outputs"):
            await batcher.submit(torch.zeros(1, 1), 5.0)
        out = await batcher.submit(torch.ones(1, 1), 5.0)
        await batcher.stop()
        return out

    assert torch.equal(_run(scenario()), torch.ones(1, 1))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"max_batch": 0}, "max_batch=0"), ({"max_queue": 0}, "max_queue=0"), ({"max_delay_ms": -1}, "max_delay_ms=-1")],
)
def test_settings_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Batcher(lambda x: x, **kwargs)


def test_submit_before_start_is_overloaded():
    async def scenario():
        with pytest.raises(Overloaded, match="not ready"):
            await Batcher(lambda x: x).submit(torch.zeros(1, 1), 1.0)

    _run(scenario())
