"""The transport-free core of semore.v1.PolicyService, which semore-serve and the fleet both run.

``PolicyCore`` owns every rule of the service that does not depend on how calls arrive: who may
call (bearer tokens) and when (ready, within the call and stream limits), the request checks (a
message that parsed, K frames, a frame per observation), decoding (a raw frame inline, JPEG/PNG
on a decode pool shared fairly between clients), each stream's frame stack, micro-batching with
its one retry rule for a failed batch (``serve.batcher``), the action check (``OnnxPolicy.act``),
the answer and its metrics, and which gRPC status each error ends a call with (``refuse``).

Its methods take and return protobuf messages and raise typed errors. A transport adapter only
receives calls, hands them over, and ends a call that raised with the status ``refuse`` gives:
``serve.server`` on grpc.aio, ``fleet.replica`` on Ray Serve. Nothing here opens a socket, so
tests/serve/test_core.py drives the core without a network.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from os import PathLike

import grpc
import numpy as np

from semore_runtime.client import (
    AuthenticationError,
    InvalidInputError,
    PolicyServerError,
    PolicyUnavailableError,
    ServerBusyError,
)
from semore_runtime.frame_stack import FrameStack
from semore_runtime.policy import NonFiniteActionError, OnnxPolicy
from semore_runtime.proto_gen.semore.v1 import policy_pb2
from serve.batcher import BatcherClosedError, BatchResult, MicroBatcher
from serve.decode import RAW_RGB8, FrameDecoder, FrameError
from serve.decode_queue import DecodeQueue
from serve.limits import StreamLimitError, StreamSlots
from serve.messages import action_message, spec_response, stack_size_error
from serve.metrics import ServerMetrics
from serve.security import TokenFile

log = logging.getLogger(__name__)

Code = grpc.StatusCode
# JPEG/PNG decode threads: Pillow releases the GIL while it decodes, and the target has 2 cores.
DECODE_WORKERS = 2
# The status and details each typed error ends a call with ("{}": the error's message). A
# PolicyServerError carries its own; anything else is the policy failing (ONNX Runtime's own
# errors). A non-finite action and a model that raises both end the call with INTERNAL: the
# request was well formed and the model broke its contract, so sending it again cannot help
# (UNAVAILABLE would make clients retry) and the client cannot fix it (not FAILED_PRECONDITION);
# the details and semore_nonfinite_actions_total tell the two apart.
_STATUS: dict[type[Exception], tuple[grpc.StatusCode, str]] = {
    FrameError: (Code.INVALID_ARGUMENT, "{}"),
    StreamLimitError: (Code.RESOURCE_EXHAUSTED, "{}"),
    BatcherClosedError: (Code.UNAVAILABLE, "{}"),
    NonFiniteActionError: (Code.INTERNAL, "{}; no action was sent"),
}
_POLICY_FAILED = (Code.INTERNAL, "policy call failed: {}")
# Why a stream ended (its "stream closed" log line), by the status it ended with.
_END_REASONS = {
    Code.INVALID_ARGUMENT: "bad input",
    Code.UNAVAILABLE: "shutdown",
    Code.INTERNAL: "policy error",
    Code.DEADLINE_EXCEEDED: "idle",
}


class Undecodable:
    """Stands for a request whose bytes are not a valid protobuf message of its type.

    A transport that parses requests itself (``serve.wire``) hands this in place of the message,
    and the core refuses it as bad input, as it does any other.
    """

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __str__(self) -> str:
        return f"the request is not a valid protobuf message ({self.error})"


def status_of(error: Exception) -> tuple[grpc.StatusCode, str]:
    """The gRPC status code and details a call that raised ``error`` ends with."""
    if isinstance(error, PolicyServerError):
        return error.code, error.details
    code, details = next((s for kind, s in _STATUS.items() if isinstance(error, kind)), _POLICY_FAILED)
    return code, details.format(error)


def _check_parsed(request: object) -> None:
    if isinstance(request, Undecodable):
        raise InvalidInputError(Code.INVALID_ARGUMENT, str(request))


def _end_reason(error: BaseException | None) -> str:
    if error is None:
        return "client finished"
    if not isinstance(error, Exception):  # cancelled, or the generator closed: the call is gone
        return "client went away"
    return _END_REASONS.get(status_of(error)[0], "aborted")


class PolicyCore:
    """semore.v1.PolicyService for one OnnxPolicy, without a transport.

    Every setting is a required keyword: its default lives with the command that serves
    (``serve.server.ServeConfig``, ``fleet.config.ReplicaConfig``). ``client`` names who calls:
    the per-client stream limit and the decode pool's fair share key on it.
    """

    def __init__(
        self,
        policy: OnnxPolicy,
        *,
        model_sha256: str,
        version: str,
        resize: bool,
        max_decode_pixels: int,
        max_batch: int,
        batch_wait_s: float,
        inline_when_alone: bool,
        token_file: str | PathLike | None,
        max_streams: int,
        max_streams_per_client: int,
        max_unary_calls: int,
    ) -> None:
        self.policy = policy
        self.spec = policy.spec
        self.metrics = ServerMetrics()
        self.metrics.count_clamped(lambda: policy.clamped_actions)
        self.batcher = MicroBatcher(
            policy.act,
            max_batch=max_batch,
            batch_wait_s=batch_wait_s,
            on_batch=self.metrics.on_batch,
            inline_when_alone=inline_when_alone,
        )
        self.decoder = FrameDecoder(self.spec.height, self.spec.width, resize, max_decode_pixels)
        self.decode_queue = DecodeQueue(DECODE_WORKERS)
        self.tokens = TokenFile(token_file) if token_file else None
        self.streams = StreamSlots(max_streams, max_streams_per_client)
        self.max_unary_calls = max_unary_calls
        self.unary_in_flight = 0  # Act calls; only the event loop touches it
        self._ready = False
        self._spec_response = spec_response(policy, resize, model_sha256, version)
        # Children resolved once: a labelled lookup per call costs more than the observation.
        self._spec_requests = self.metrics.requests.labels("GetSpec")
        self._act_requests = self.metrics.requests.labels("Act")
        self._act_seconds = self.metrics.request_seconds.labels("Act")

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """Whether new calls are taken (semore_ready says so too); open streams go on regardless."""
        return self._ready

    @ready.setter
    def ready(self, ready: bool) -> None:
        self._ready = ready
        self.metrics.ready.set(int(ready))

    def start(self) -> None:
        """Starts the batcher thread; calls are refused (UNAVAILABLE) until ``warm_up``."""
        self.batcher.start()

    def warm_up(self) -> float:
        """Runs the policy at batch 1 and max batch (first calls allocate), then takes calls; its seconds."""
        t0 = time.perf_counter()
        for batch in sorted({1, self.batcher.max_batch}):
            self.policy.act(np.zeros((batch, *self.spec.stack_shape), dtype=np.uint8))
        self.ready = True
        return time.perf_counter() - t0

    def close(self) -> None:
        """Answers every request the batcher holds, then stops its thread and the decode pool."""
        self.ready = False
        self.batcher.close(timeout=5.0)
        self.metrics.close()
        self.decode_queue.shutdown()

    # -- admission -------------------------------------------------------------------------
    def authenticate(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> None:
        """Raises AuthenticationError unless auth is off or the call's metadata carries an accepted token."""
        if self.tokens is not None:
            self.tokens.check_token(metadata)

    def reload_tokens(self) -> None:
        if self.tokens is not None:
            self.tokens.reload()

    def _check_ready(self) -> None:
        if not self._ready:
            raise PolicyUnavailableError(Code.UNAVAILABLE, "the policy server is not ready (warming up)")

    def refuse(self, method: str, error: Exception) -> tuple[grpc.StatusCode, str]:
        """The status a call of ``method`` that raised ``error`` ends with; counted, and logged
        when a caller was turned away or the policy broke."""
        code, details = status_of(error)
        if isinstance(error, NonFiniteActionError):
            self.metrics.nonfinite_actions.labels(method).inc()
            log.warning(
                "%s refused: %s", method, error, extra={"event": "nonfinite_action", "method": method}
            )
        elif isinstance(error, AuthenticationError):
            log.warning(
                "rejected call to %s: %s", method, details, extra={"event": "auth_denied", "method": method}
            )
        elif code == Code.INTERNAL and not isinstance(error, PolicyServerError):
            log.error("%s: policy call failed", method, exc_info=error, extra={"event": "policy_error"})
        self.metrics.error(method, code.name)
        return code, details

    # -- the calls ---------------------------------------------------------------------------
    def get_spec(self, request: policy_pb2.GetSpecRequest | Undecodable) -> policy_pb2.GetSpecResponse:
        self._spec_requests.inc()
        _check_parsed(request)
        return self._spec_response

    async def act(self, request: policy_pb2.ActRequest | Undecodable, client: str) -> policy_pb2.Action:
        """A unary Act: K frames, oldest first, to one action."""
        t0 = time.perf_counter()
        self._act_requests.inc()
        self._check_ready()
        _check_parsed(request)
        if self.unary_in_flight >= self.max_unary_calls:
            raise ServerBusyError(
                Code.RESOURCE_EXHAUSTED,
                f"the server already has its limit of {self.max_unary_calls} Act calls in flight",
            )
        self.unary_in_flight += 1
        try:
            refused = stack_size_error(self.spec, len(request.frames))
            if refused is not None:
                raise InvalidInputError(Code.INVALID_ARGUMENT, refused)
            frames = []
            for i, frame in enumerate(request.frames):
                try:
                    frames.append(await self.decode(frame, client))
                except FrameError as exc:
                    raise FrameError(f"frames[{i}]: {exc}", exc.reason) from exc
            producer = self.batcher.add_producer()
            try:
                result = await self.infer(np.stack(frames), producer)
            finally:
                self.batcher.remove_producer(producer)
        finally:
            self.unary_in_flight -= 1
        elapsed = time.perf_counter() - t0
        self._act_seconds.observe(elapsed)
        return action_message(request.seq, result, elapsed)

    def open_stream(self, client: str) -> Stream:
        """A new StreamAct stream of ``client``: use it as a context manager, which frees it."""
        self._check_ready()
        return Stream(self, client)

    # -- the steps every call shares ---------------------------------------------------------
    async def decode(self, frame: policy_pb2.Frame, client: str) -> np.ndarray:
        """The policy-sized frame; a refused one is counted by its reason and raised as FrameError.

        A raw frame is a zero-copy view, made on the caller's event loop; JPEG/PNG go to the decode
        pool, so one big image does not stall every other call, in ``client``'s fair share of it.
        """
        try:
            if frame.encoding == RAW_RGB8:
                return self.decoder.decode(frame)
            return await self.decode_queue.run(client, self.decoder.decode, frame)
        except FrameError as exc:
            self.metrics.refused(exc.reason)
            raise

    async def infer(self, stack: np.ndarray, producer: int) -> BatchResult:
        """The policy's answer for one stack: inline when nothing could share the call, else batched."""
        return self.batcher.try_inline(stack, producer) or await self.batcher.submit_async(stack, producer)


class Stream:
    """One StreamAct stream: its slot, its frame stack and its batcher producer.

    ``with`` frees them when the stream ends, and logs why; ``close`` may come first (a transport
    that learns of a cancelled call before the stream's code runs again) and makes that a no-op.
    """

    def __init__(self, core: PolicyCore, client: str) -> None:
        self.id = core.streams.try_open(client)
        self._core = core
        self._client = client
        self._stack = FrameStack(core.spec.frame_stack, core.spec.frame_shape)
        self._producer = core.batcher.add_producer()
        self._opened = time.perf_counter()
        self.frames = 0
        core.metrics.active_streams.inc()
        core.metrics.streams_opened.inc()
        log.info(
            "stream %d opened", self.id, extra={"event": "stream_opened", "stream": self.id, "peer": client}
        )

    async def step(self, obs: policy_pb2.Observation | Undecodable) -> policy_pb2.Action:
        """One observation: decode its frame, reset or push the stack, act."""
        # Plain attribute lookups, no local aliases: side by side with an aliased loop, the
        # single-stream benchmark came out the same (within 2%), so they would not pay.
        t0 = time.perf_counter()
        self._core.metrics.stream_requests.inc()
        _check_parsed(obs)
        if not obs.HasField("frame"):
            raise InvalidInputError(Code.INVALID_ARGUMENT, f"observation seq={obs.seq} has no frame")
        try:
            frame = await self._core.decode(obs.frame, self._client)
        except FrameError as exc:
            raise FrameError(f"observation seq={obs.seq}: {exc}", exc.reason) from exc
        if obs.reset:
            self._stack.reset()
        result = await self._core.infer(self._stack.push(frame), self._producer)
        self.frames += 1
        elapsed = time.perf_counter() - t0
        self._core.metrics.stream_seconds.observe(elapsed)
        return action_message(obs.seq, result, elapsed)

    def close(self, why: str) -> None:
        core = self._core
        if not core.streams.close(self.id):
            return
        core.batcher.remove_producer(self._producer)
        core.metrics.active_streams.dec()
        log.info(
            "stream %d closed (%s)",
            self.id,
            why,
            extra={
                "event": "stream_closed",
                "stream": self.id,
                "peer": self._client,
                "frames": self.frames,
                "reason": why,
                "seconds": round(time.perf_counter() - self._opened, 3),
            },
        )

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, _kind, error: BaseException | None, _traceback) -> None:
        self.close(_end_reason(error))
