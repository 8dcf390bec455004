"""MicroBatcher: batches concurrent requests, never waits for a lone producer, survives model errors."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from serve.batcher import BatcherClosedError, MicroBatcher


def echo_model(calls: list[int], delay: float = 0.0):
    def run(stacks: np.ndarray) -> np.ndarray:
        calls.append(len(stacks))
        if delay:
            time.sleep(delay)
        return stacks.reshape(len(stacks), -1)[:, :1].astype(np.float32)  # action = first pixel

    return run


def stack(value: int) -> np.ndarray:
    return np.full((2, 2, 2, 3), value, dtype=np.uint8)


def test_answers_each_request_with_its_own_row():
    calls: list[int] = []
    batcher = MicroBatcher(echo_model(calls), max_batch=8, batch_wait_s=0.001)
    batcher.start()
    try:
        producers = [batcher.add_producer() for _ in range(4)]
        pendings = [batcher.submit(stack(v), producers[v % 4]) for v in range(20)]
        for v, pending in enumerate(pendings):
            result = pending.wait(5)
            assert result.action[0] == v
            assert 1 <= result.batch_size <= 8
        assert sum(calls) == 20 and max(calls) <= 8
    finally:
        batcher.close()


def test_concurrent_producers_share_model_calls():
    calls: list[int] = []
    batcher = MicroBatcher(echo_model(calls, delay=0.002), max_batch=16, batch_wait_s=0.002)
    batcher.start()
    n_threads, per_thread = 8, 20
    errors: list[str] = []

    def producer(tid: int) -> None:
        me = batcher.add_producer()
        try:
            for i in range(per_thread):
                value = (tid * per_thread + i) % 256
                got = batcher.submit(stack(value), me).wait(5).action[0]
                if got != value:
                    errors.append(f"thread {tid} step {i}: {got} != {value}")
        finally:
            batcher.remove_producer(me)

    threads = [threading.Thread(target=producer, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    batcher.close()
    assert not errors
    assert sum(calls) == n_threads * per_thread
    assert len(calls) < n_threads * per_thread / 2, f"no batching happened: {calls}"


def test_lone_producer_does_not_wait():
    calls: list[int] = []
    batcher = MicroBatcher(echo_model(calls), max_batch=32, batch_wait_s=0.2)  # a huge window
    batcher.start()
    me = batcher.add_producer()
    try:
        t0 = time.perf_counter()
        for v in range(5):
            batcher.submit(stack(v), me).wait(5)
        assert time.perf_counter() - t0 < 0.2, "the batcher waited although no other producer was active"
    finally:
        batcher.close()


def test_idle_open_producers_do_not_delay_a_busy_one():
    calls: list[int] = []
    batcher = MicroBatcher(echo_model(calls), max_batch=32, batch_wait_s=0.05, active_window_s=0.02)
    batcher.start()
    try:
        idle = [batcher.add_producer() for _ in range(3)]  # open streams that send nothing
        me = batcher.add_producer()
        # While the idle ones are fresh (just opened) they count as active: no inline call, and
        # the batch waits for them.
        assert batcher.try_inline(stack(1), me) is None
        t0 = time.perf_counter()
        batcher.submit(stack(1), me).wait(5)
        assert time.perf_counter() - t0 >= 0.04
        time.sleep(0.03)  # ...once the activity window has passed, they no longer hold anyone up
        assert batcher.active_producers() <= 1  # at most this one
        t0 = time.perf_counter()
        for v in range(5):
            batcher.submit(stack(v), me).wait(5)
        assert time.perf_counter() - t0 < 0.04
        result = batcher.try_inline(stack(7), me)  # and a lone active producer skips the thread
        assert result is not None and result.action[0] == 7 and result.batch_size == 1
        for producer in idle:
            batcher.remove_producer(producer)
        assert batcher.producers == 1
    finally:
        batcher.close()


def test_model_error_fails_only_that_batch():
    state = {"fail": True}

    def flaky(stacks: np.ndarray) -> np.ndarray:
        if state["fail"]:
            raise RuntimeError("boom")
        return np.zeros((len(stacks), 1), dtype=np.float32)

    batcher = MicroBatcher(flaky, max_batch=4, batch_wait_s=0)
    batcher.start()
    try:
        with pytest.raises(RuntimeError, match="boom"):
            batcher.submit(stack(1)).wait(5)
        state["fail"] = False
        assert batcher.submit(stack(1)).wait(5).action.shape == (1,)
    finally:
        batcher.close()


def test_close_answers_queued_then_refuses():
    calls: list[int] = []
    batcher = MicroBatcher(echo_model(calls, delay=0.01), max_batch=2, batch_wait_s=0)
    batcher.start()
    pendings = [batcher.submit(stack(v)) for v in range(6)]
    batcher.close(timeout=5)
    assert [p.wait(1).action[0] for p in pendings] == list(range(6))
    with pytest.raises(BatcherClosedError):
        batcher.submit(stack(0))
