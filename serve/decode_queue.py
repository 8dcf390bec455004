"""The decode pool for JPEG/PNG frames, shared fairly between clients.

With one first-come-first-served pool, a client that keeps several slow decodes in flight
queues them all ahead of everyone else: while three clients sent 0.6 s PNG bombs, a
well-behaved client's PNG ``Act`` went from 2.7 ms to 1.17 s. Here each client (a gRPC peer,
one connection) decodes one frame at a time, its further frames waiting in its own line, so the
pool's queue holds at most one job per client and is served round-robin: a client's slow or
hostile frames delay that client, and another's frame waits behind at most one job of each
other client. Measured (tests/serve/test_input_limits.py): while one client kept four Acts of
4K PNGs in flight, another's small-PNG Act p50 went from ~3 ms to 4.6-9 ms, against 2.5 s with
the plain pool.

What waits is bounded too: every waiting frame belongs to an open PolicyService call, and the
server caps those (``--max-streams`` streams, ``serve.server.MAX_UNARY_CALLS`` Act calls). A client that cancels a call does not get its turn back
until the worker running its frame is done, so cancelling cannot put a second job in the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from concurrent import futures
from typing import TypeVar

T = TypeVar("T")


class DecodeQueue:
    """Runs decode jobs on ``workers`` threads, one job per client at a time, in arrival order.

    ``run`` is called on one event loop only (the server's): the bookkeeping needs no lock.
    """

    def __init__(self, workers: int) -> None:
        self._pool = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="semore-decode")
        # A client is here while it has a job in the pool; the deque holds its frames waiting their turn.
        self._clients: dict[str, deque[asyncio.Future[None]]] = {}

    async def run(self, client: str, fn: Callable[..., T], *args) -> T:
        """``fn(*args)`` on a worker thread once ``client``'s earlier jobs are done."""
        loop = asyncio.get_running_loop()
        waiting = self._clients.get(client)
        if waiting is None:
            self._clients[client] = deque()
        else:
            turn = loop.create_future()
            waiting.append(turn)
            try:
                await turn
            except asyncio.CancelledError:
                if turn.cancelled():
                    waiting.remove(turn)
                else:  # handed the turn as the call was cancelled: pass it on
                    self._done(client)
                raise
        try:
            job = self._pool.submit(fn, *args)
        except RuntimeError:  # the pool is shut down (the server is stopping)
            self._done(client)
            raise
        try:
            return await asyncio.wrap_future(job)
        finally:
            if job.done():  # the usual case: no second wake-up of the loop
                self._done(client)
            else:  # cancelled while a worker runs it: the client's turn ends with the job
                job.add_done_callback(lambda _job: self._done_threadsafe(loop, client))

    def _done_threadsafe(self, loop: asyncio.AbstractEventLoop, client: str) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed while the job ran: nobody waits
            loop.call_soon_threadsafe(self._done, client)

    def _done(self, client: str) -> None:
        """``client``'s job left the pool: its next waiting frame goes in, or it is forgotten."""
        waiting = self._clients[client]
        if waiting:
            waiting.popleft().set_result(None)
        else:
            del self._clients[client]

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
