"""Dynamic micro-batching: one model call for the frame stacks that arrive close together.

A policy call on a batch of B stacks costs far less than B calls, so with many concurrent robot
streams the server folds their pending requests into one call. Waiting for company only pays
when company is coming: the batcher waits (at most ``batch_wait_s``) only while other
producers are *active*, i.e. sent a request or got an answer within the last
``active_window_s``. A stream that is open but idle (a robot between episodes, a 30 Hz camera
between frames) does not make every other stream wait. A lone active producer skips the batcher
thread altogether (``try_inline``): there is nothing to batch with, and the hand-off to the
batcher thread and back costs two thread wake-ups. The inline call runs on the event loop,
where every other call (a health probe, GetSpec, a stream's next message) waits for it; so only
a model whose batch-1 call takes at most ``INLINE_MAX_S`` runs inline, and a slower one always
goes through the batcher thread, leaving the loop free.

A failure stays with its request: when a batched call raises, its requests are run again one at
a time, so only the request whose input makes the model fail gets the error.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

# The longest batch-1 model call (moving average) that may run on the event loop: other calls on
# the loop wait at most about this long behind it. A thread hop costs ~0.1-0.3 ms, so below this
# inline pays; above it the hop is cheap next to the call and keeps health probes prompt.
INLINE_MAX_S = 0.002


class BatcherClosedError(RuntimeError):
    """The batcher is shut down and takes no more requests."""


@dataclass(slots=True)
class BatchResult:
    """One request's share of a batched model call."""

    action: np.ndarray  # [A] float32
    inference_s: float  # wall time of the whole model call
    batch_size: int


class _Pending:
    """A queued request from an asyncio handler: answered on its event loop, one wake-up per batch."""

    __slots__ = ("stack", "producer", "future", "loop")

    def __init__(
        self, stack: np.ndarray, producer: int | None, future: asyncio.Future, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.stack = stack
        self.producer = producer
        self.future = future
        self.loop = loop


Outcome = tuple[BatchResult, None] | tuple[None, BaseException]


def _settle(items: list[tuple[asyncio.Future, Outcome]]) -> None:
    # Runs on the event loop. A handler cancelled meanwhile (client gone) left a cancelled future.
    for future, (result, error) in items:
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


def _deliver(batch: list[_Pending], outcomes: list[Outcome]) -> None:
    """Answers a batch with one callback per event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list] = {}
    for item, outcome in zip(batch, outcomes, strict=True):
        by_loop.setdefault(item.loop, []).append((item.future, outcome))
    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            loop.call_soon_threadsafe(_settle, items)


class MicroBatcher:
    """Runs ``run_batch([B, K, H, W, 3]) -> [B, A]`` for requests from many coroutines.

    Requests are answered in submission order within a batch and model calls run one at a time,
    so the order of each stream's requests is preserved. ``on_batch(batch_size, seconds)`` lets
    the caller record metrics without this module knowing about Prometheus.
    """

    def __init__(
        self,
        run_batch: Callable[[np.ndarray], np.ndarray],
        max_batch: int = 32,
        batch_wait_s: float = 0.0005,
        on_batch: Callable[[int, float], None] | None = None,
        inline_when_alone: bool = True,
        active_window_s: float | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if batch_wait_s < 0:
            raise ValueError(f"batch_wait_s must be >= 0, got {batch_wait_s}")
        self._run_batch = run_batch
        self.max_batch = max_batch
        self.batch_wait_s = batch_wait_s
        # A ping-ponging client turns an answer into its next request within a few ms even when
        # dozens of streams share its process; a camera-paced robot is silent for tens of ms.
        self.active_window_s = (
            active_window_s if active_window_s is not None else max(0.005, 2 * batch_wait_s)
        )
        self.inline_when_alone = inline_when_alone
        self.single_call_s = 0.0  # moving average of batch-1 model calls, inline or not
        self._on_batch = on_batch
        self._queue: deque[_Pending] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._last_activity: dict[int, float] = {}  # producer -> perf_counter of its last request/answer
        self._ids = itertools.count(1)
        self._closing = False
        # Held around every model call: at most one runs at a time, batched or inline.
        self._model_lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="semore-batcher", daemon=True)
        self._started = False

    # -- producers -------------------------------------------------------------------------
    def add_producer(self) -> int:
        """Registers a source of requests (a stream, a unary call); pass the id to submit."""
        with self._cond:
            producer = next(self._ids)
            self._last_activity[producer] = time.perf_counter()
            return producer

    def remove_producer(self, producer: int) -> None:
        with self._cond:
            self._last_activity.pop(producer, None)
            self._cond.notify()  # a batch waiting for this producer can go now

    @property
    def producers(self) -> int:
        """Registered producers (open streams and unary calls in flight)."""
        return len(self._last_activity)

    def _active(self, now: float, exclude: int | None = None, stop_at: int | None = None) -> int:
        # Caller holds the lock. O(producers), and stops early once ``stop_at`` is reached.
        horizon = now - self.active_window_s
        count = 0
        for producer, last in self._last_activity.items():
            if last >= horizon and producer != exclude:
                count += 1
                if stop_at is not None and count >= stop_at:
                    break
        return count

    def active_producers(self) -> int:
        """Producers that sent a request or got an answer within the activity window."""
        with self._cond:
            return self._active(time.perf_counter())

    # -- requests --------------------------------------------------------------------------
    def submit_async(self, stack: np.ndarray, producer: int | None = None) -> asyncio.Future:
        """Queues one frame stack [K, H, W, 3]; await the returned future for the BatchResult."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._enqueue(_Pending(stack, producer, future, loop))
        return future

    def try_inline(self, stack: np.ndarray, producer: int | None = None) -> BatchResult | None:
        """Runs the policy on the caller's thread when nothing could share the call, else None.

        With no other active producer and nothing queued there is nothing to batch with; the
        caller falls back to ``submit_async`` whenever this returns None.
        """
        if not self.inline_when_alone or self.single_call_s > INLINE_MAX_S:
            return None
        with self._cond:
            now = time.perf_counter()
            if self._queue or self._closing or self._active(now, exclude=producer, stop_at=1):
                return None
            if producer in self._last_activity:
                self._last_activity[producer] = now
        if not self._model_lock.acquire(blocking=False):
            return None
        try:
            actions, elapsed = self._call(stack[None])
        finally:
            self._model_lock.release()
        self._note_single_call(elapsed)
        self._mark_answered([producer])
        self._report(1, elapsed)
        return BatchResult(actions[0], elapsed, 1)

    def _enqueue(self, item: _Pending) -> None:
        with self._cond:
            if self._closing:
                raise BatcherClosedError("the server is shutting down")
            if item.producer in self._last_activity:
                self._last_activity[item.producer] = time.perf_counter()
            self._queue.append(item)
            self._cond.notify()

    def _mark_answered(self, producers: list[int | None]) -> None:
        with self._cond:
            now = time.perf_counter()
            for producer in producers:
                if producer in self._last_activity:
                    self._last_activity[producer] = now

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        if not self._started:
            self._started = True
            self._thread.start()

    def close(self, timeout: float | None = None) -> None:
        """Stops taking requests, answers everything already queued, then stops the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._started:
            self._thread.join(timeout)
        with self._cond:  # never started, or the thread is stuck: fail what is left
            leftovers = list(self._queue)
            self._queue.clear()
        if leftovers:
            closed = BatcherClosedError("the server shut down before answering")
            _deliver(leftovers, [(None, closed)] * len(leftovers))

    # -- the batching thread ---------------------------------------------------------------
    def _collect(self) -> list[_Pending] | None:
        """Blocks for the next batch; None when closing and drained."""
        queue = self._queue
        with self._cond:
            while not queue:
                if self._closing:
                    return None
                self._cond.wait()
            batch = [queue.popleft() for _ in range(min(len(queue), self.max_batch))]
            if self.batch_wait_s <= 0 or len(batch) >= self.max_batch:
                return batch
            start = time.perf_counter()
            deadline = start + self.batch_wait_s
            # Everyone active may still send; those in the batch already did.
            target = min(self.max_batch, self._active(start, stop_at=self.max_batch))
            while len(batch) < target and not self._closing:
                if queue:
                    batch.append(queue.popleft())
                    continue
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
                # A producer may have gone away (its stream closed) meanwhile.
                target = min(target, len(self._last_activity))
            return batch

    def _call(self, stacks: np.ndarray) -> tuple[np.ndarray, float]:
        """One model call on ``stacks`` [B, K, H, W, 3]: actions [B, A] and the call's wall time.

        The caller holds the model lock.
        """
        t0 = time.perf_counter()
        actions = self._run_batch(stacks)
        elapsed = time.perf_counter() - t0
        if actions.shape[0] != len(stacks):
            raise RuntimeError(f"policy returned {actions.shape[0]} actions for a batch of {len(stacks)}")
        return actions, elapsed

    def _note_single_call(self, seconds: float) -> None:
        # From the loop (inline) and the batcher thread: a float store either way, no lock needed.
        self.single_call_s = 0.8 * self.single_call_s + 0.2 * seconds

    def _report(self, batch_size: int, seconds: float) -> None:
        if self._on_batch is not None:
            try:
                self._on_batch(batch_size, seconds)
            except Exception:  # metrics must never stop serving
                log.exception("on_batch callback failed")

    def _outcomes(self, batch: list[_Pending], calls: list[tuple[int, float]]) -> list[Outcome]:
        """Each request's result or error; ``calls`` gets (batch size, seconds) of each call that answered.

        A batch that fails is retried one request at a time, so one stream's poisoned input fails
        that stream alone, not every stream it happened to be batched with.
        """
        n = len(batch)
        try:
            stacks = np.stack([p.stack for p in batch]) if n > 1 else batch[0].stack[None]
            with self._model_lock:
                actions, elapsed = self._call(stacks)
        except Exception as exc:  # the model failing must fail requests, not the server
            if n == 1:
                return [(None, exc)]
            log.warning("policy call failed for a batch of %d (%s): retrying one at a time", n, exc)
            return [outcome for item in batch for outcome in self._outcomes([item], calls)]
        calls.append((n, elapsed))
        if n == 1:
            self._note_single_call(elapsed)
        return [(BatchResult(actions[i], elapsed, n), None) for i in range(n)]

    def _loop(self) -> None:
        while True:
            batch = self._collect()
            if batch is None:
                return
            calls: list[tuple[int, float]] = []
            outcomes = self._outcomes(batch, calls)
            self._mark_answered([p.producer for p in batch])
            _deliver(batch, outcomes)
            for batch_size, seconds in calls:  # after the answers: metrics never delay them
                self._report(batch_size, seconds)
