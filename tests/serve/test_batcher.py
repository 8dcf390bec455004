"""MicroBatcher: batches concurrent requests, never waits for a lone producer, survives model errors.

Driven the way the servicer drives it: coroutines on one event loop call ``try_inline`` and
``submit_async`` while the batcher thread runs the model.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from serve.batcher import INLINE_MAX_S, BatcherClosedError, BatchResult, MicroBatcher


def echo_model(calls: list[int], delay: float = 0.0):
    def run(stacks: np.ndarray) -> np.ndarray:
        calls.append(len(stacks))
        if delay:
            time.sleep(delay)
        return stacks.reshape(len(stacks), -1)[:, :1].astype(np.float32)  # action = first pixel

    return run


def stack(value: int) -> np.ndarray:
    return np.full((2, 2, 2, 3), value, dtype=np.uint8)


async def submit(batcher: MicroBatcher, value: int, producer: int | None = None) -> BatchResult:
    return await asyncio.wait_for(batcher.submit_async(stack(value), producer), 5)


def run(batcher: MicroBatcher, coroutine) -> None:
    """Runs the test body on an event loop with the batcher started, and closes the batcher after."""
    batcher.start()
    try:
        asyncio.run(coroutine)
    finally:
        batcher.close()


def test_answers_each_request_with_its_own_row():
    calls: list[int] = []
    batcher = MicroBatcher(echo_model(calls), max_batch=8, batch_wait_s=0.001)

    async def body() -> None:
        producers = [batcher.add_producer() for _ in range(4)]
        results = await asyncio.gather(*(submit(batcher, v, producers[v % 4]) for v in range(20)))
        for v, result in enumerate(results):
            assert result.action[0] == v
            assert 1 <= result.batch_size <= 8
        assert sum(calls) == 20 and max(calls) <= 8

    run(batcher, body())


def test_concurrent_producers_share_model_calls():
    calls: list[int] = []
    batcher = MicroBatcher(echo_model(calls, delay=0.002), max_batch=16, batch_wait_s=0.002)
    n_producers, per_producer = 8, 20
    errors: list[str] = []

    async def producer(pid: int, me: int) -> None:
        try:
            for i in range(per_producer):
                value = (pid * per_producer + i) % 256
                got = (await submit(batcher, value, me)).action[0]
                if got != value:
                    errors.append(f"producer {pid} step {i}: {got} != {value}")
        finally:
            batcher.remove_producer(me)

    async def body() -> None:
        producers = [batcher.add_producer() for _ in range(n_producers)]  # all open before any sends
        await asyncio.gather(*(producer(pid, me) for pid, me in enumerate(producers)))

    run(batcher, body())
    assert not errors
    assert sum(calls) == n_producers * per_producer
    assert len(calls) < n_producers * per_producer / 2, f"no batching happened: {calls}"


def test_lone_producer_does_not_wait():
    calls: list[int] = []
    batcher = MicroBatcher(echo_model(calls), max_batch=32, batch_wait_s=0.2)  # a huge window

    async def body() -> None:
        me = batcher.add_producer()
        t0 = time.perf_counter()
        for v in range(5):
            await submit(batcher, v, me)  # the batcher thread, not the inline path
        assert time.perf_counter() - t0 < 0.2, "the batcher waited although no other producer was active"

    run(batcher, body())


def test_idle_open_producers_do_not_delay_a_busy_one():
    calls: list[int] = []
    batcher = MicroBatcher(echo_model(calls), max_batch=32, batch_wait_s=0.05, active_window_s=0.02)

    async def body() -> None:
        idle = [batcher.add_producer() for _ in range(3)]  # open streams that send nothing
        me = batcher.add_producer()
        # While the idle ones are fresh (just opened) they count as active: no inline call, and
        # the batch waits for them.
        assert batcher.try_inline(stack(1), me) is None
        t0 = time.perf_counter()
        await submit(batcher, 1, me)
        assert time.perf_counter() - t0 >= 0.04
        await asyncio.sleep(0.03)  # ...once the activity window has passed, they no longer hold anyone up
        assert batcher.active_producers() <= 1  # at most this one
        t0 = time.perf_counter()
        for v in range(5):
            await submit(batcher, v, me)
        assert time.perf_counter() - t0 < 0.04
        result = batcher.try_inline(stack(7), me)  # and a lone active producer skips the thread
        assert result is not None and result.action[0] == 7 and result.batch_size == 1
        for producer in idle:
            batcher.remove_producer(producer)
        assert batcher.producers == 1

    run(batcher, body())


def test_model_error_fails_only_that_batch():
    state = {"fail": True}

    def flaky(stacks: np.ndarray) -> np.ndarray:
        if state["fail"]:
            raise RuntimeError("boom")
        return np.zeros((len(stacks), 1), dtype=np.float32)

    batcher = MicroBatcher(flaky, max_batch=4, batch_wait_s=0)

    async def body() -> None:
        with pytest.raises(RuntimeError, match="boom"):
            await submit(batcher, 1)
        state["fail"] = False
        assert (await submit(batcher, 1)).action.shape == (1,)

    run(batcher, body())


def test_a_failing_batch_is_retried_one_request_at_a_time():
    calls: list[int] = []

    def picky(stacks: np.ndarray) -> np.ndarray:
        calls.append(len(stacks))
        if (stacks == 99).any():  # one request's input makes the whole call fail
            raise ValueError("poisoned input")
        return stacks.reshape(len(stacks), -1)[:, :1].astype(np.float32)

    batcher = MicroBatcher(picky, max_batch=8, batch_wait_s=0.05)

    async def body() -> None:
        producers = [batcher.add_producer() for _ in range(4)]  # all active: the batch waits for all
        values = [1, 99, 3, 4]
        results = await asyncio.gather(
            *(submit(batcher, v, p) for v, p in zip(values, producers, strict=True)), return_exceptions=True
        )
        assert isinstance(results[1], ValueError)
        assert [r.action[0] for r in results if isinstance(r, BatchResult)] == [1, 3, 4]
        assert all(r.batch_size == 1 for r in results if isinstance(r, BatchResult))

    run(batcher, body())
    assert calls == [4, 1, 1, 1, 1]  # the batch, then each of its requests alone


def test_close_answers_queued_then_refuses():
    calls: list[int] = []
    batcher = MicroBatcher(echo_model(calls, delay=0.01), max_batch=2, batch_wait_s=0)
    batcher.start()

    async def body() -> None:
        futures = [batcher.submit_async(stack(v)) for v in range(6)]
        batcher.close(timeout=5)
        assert [(await asyncio.wait_for(f, 1)).action[0] for f in futures] == list(range(6))
        with pytest.raises(BatcherClosedError):
            batcher.submit_async(stack(0))

    asyncio.run(body())


def test_a_slow_model_never_runs_on_the_event_loop():
    """A batch-1 call over INLINE_MAX_S would hold every other call on the loop: it goes to the thread."""
    calls: list[int] = []
    batcher = MicroBatcher(echo_model(calls, delay=3 * INLINE_MAX_S), max_batch=4, batch_wait_s=0.0)

    async def body() -> None:
        me = batcher.add_producer()
        assert batcher.try_inline(stack(1), me) is not None  # nothing known yet: inline
        for v in range(10):  # the batcher thread's batch-1 calls keep the average current
            if batcher.try_inline(stack(v), me) is None:
                await submit(batcher, v, me)
        assert batcher.single_call_s > INLINE_MAX_S
        assert batcher.try_inline(stack(2), me) is None
        loop_thread_calls = len(calls)
        result = await submit(batcher, 3, me)
        assert result.action[0] == 3 and len(calls) == loop_thread_calls + 1

    run(batcher, body())
