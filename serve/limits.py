"""Per-stream limits of semore-serve: how many streams, how many per client, how long silent.

A policy server's scarce resource is its stream slots (each holds a frame stack and a batcher
producer). ``StreamSlots`` caps them globally (--max-streams) and per client IP address
(--max-streams-per-client), so one client, however many connections it opens, cannot take every
slot; ``IdleTimer`` frees the slot of a stream that has gone silent (--idle-timeout), such as a
robot that vanished without its connection dropping. ``SideCallLimit`` caps the streams outside
PolicyService (health watches, reflection) on their own, in the same way, and never a unary call.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import threading

import grpc


def client_address(peer: str) -> str:
    """The client a peer string names, without its port: "ipv4:10.0.0.7:51234" -> "ipv4:10.0.0.7".

    Per-client limits key on this: a client opening more connections gets no more slots.
    """
    kind, _, rest = peer.partition(":")
    return f"{kind}:{rest.rsplit(':', 1)[0]}" if kind in ("ipv4", "ipv6") else peer


class StreamLimitError(Exception):
    """A new stream would go over a limit; the message names it and its option."""


class StreamSlots:
    """Counts open streams against a limit and a per-client limit, and remembers who they are.

    ``names`` says in a refusal what the limit and the per-client limit count (by default the
    streams of --max-streams and --max-streams-per-client).
    """

    def __init__(
        self,
        limit: int,
        per_client: int,
        names: tuple[str, str] = (
            "concurrent streams (--max-streams)",
            "concurrent streams (--max-streams-per-client)",
        ),
    ) -> None:
        self.limit = limit
        self.per_client = per_client
        self._names = names
        self._lock = threading.Lock()
        self._open: dict[int, str] = {}  # stream id -> client address
        self._per_client: dict[str, int] = {}
        self._ids = itertools.count(1)

    def try_open(self, peer: str) -> int:
        """A new stream's id; StreamLimitError when a limit is reached."""
        client = client_address(peer)
        with self._lock:
            if len(self._open) >= self.limit:
                raise StreamLimitError(
                    f"the server already serves its limit of {self.limit} {self._names[0]}"
                )
            if self._per_client.get(client, 0) >= self.per_client:
                raise StreamLimitError(
                    f"{client} already has its limit of {self.per_client} {self._names[1]}"
                )
            stream_id = next(self._ids)
            self._open[stream_id] = client
            self._per_client[client] = self._per_client.get(client, 0) + 1
            return stream_id

    def close(self, stream_id: int) -> bool:
        with self._lock:
            client = self._open.pop(stream_id, None)
            if client is None:
                return False
            left = self._per_client.pop(client) - 1
            if left:
                self._per_client[client] = left
            return True

    def __len__(self) -> int:
        return len(self._open)


class IdleTimer:
    """Cancels a stream's handler task once its stream has been silent for ``timeout`` seconds.

    One timer per stream, re-armed only when it fires early: a message costs one clock read
    (``touch``), not a timer reschedule.
    """

    __slots__ = ("_loop", "_task", "_timeout", "_handle", "last", "fired")

    def __init__(self, timeout: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._timeout = timeout
        self.last = self._loop.time()
        self.fired = False
        self._handle = self._loop.call_later(timeout, self._check)

    def _check(self) -> None:
        silent = self._loop.time() - self.last
        if silent >= self._timeout:
            self.fired = True
            self._task.cancel()
        else:
            self._handle = self._loop.call_later(self._timeout - silent, self._check)

    def touch(self) -> None:
        self.last = self._loop.time()

    def cancel(self) -> None:
        self._handle.cancel()


class SideCallLimit(grpc.aio.ServerInterceptor):
    """Caps the open streams outside PolicyService (health watches, reflection), also per client.

    They never count against the policy's limits, so probes cannot lock robots out; but they need
    no token, so without a cap of their own anyone who reaches the port could hold open health
    watches without end. Beyond ``limit`` open ones, or ``per_client`` from one client address, a
    new one gets RESOURCE_EXHAUSTED. A unary call (a health Check) is never counted nor refused:
    it is answered at once, so it cannot be held open, and an orchestrator's liveness probe must
    be answered however many watches others hold.
    """

    def __init__(self, limit: int, per_client: int, policy_prefix: str) -> None:
        self.slots = StreamSlots(limit, per_client, ("open health and reflection streams",) * 2)
        self._policy_prefix = policy_prefix

    @property
    def open(self) -> int:
        return len(self.slots)

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if (
            handler is None
            or not handler.response_streaming
            or handler_call_details.method.startswith(self._policy_prefix)
        ):
            return handler
        kind = "stream_stream" if handler.request_streaming else "unary_stream"
        return handler._replace(**{kind: self._counted(getattr(handler, kind))})

    async def _enter(self, context) -> int:
        try:
            return self.slots.try_open(context.peer())
        except StreamLimitError as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))

    def _counted(self, behavior):
        # Reflection yields its answers, health's Watch writes them on the context and returns.
        if inspect.isasyncgenfunction(behavior):

            async def generator(request, context):
                slot = await self._enter(context)
                try:
                    async for item in behavior(request, context):
                        yield item
                finally:
                    self.slots.close(slot)

            return generator

        async def writer(request, context):
            slot = await self._enter(context)
            try:
                return await behavior(request, context)
            finally:
                self.slots.close(slot)

        return writer
