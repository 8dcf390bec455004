"""PolicyClient: talk to a ``semore-serve`` policy server (torch-free: numpy, grpcio, protobuf).

Two ways to ask for actions:

* ``client.session()`` opens a StreamAct stream; the server keeps the K-frame stack, so each
  ``session.step(frame)`` sends one frame and gets one action. ``session.reset()`` marks the next
  frame as the start of an episode. If the connection drops, the session reconnects with
  backoff and replays the frames the server's stack needs, so the actions stay exactly those of
  an unbroken stream.
* ``client.act(frames)`` sends all K frames in one unary call (stateless, easy to load-balance).

The same client talks to a fleet (``semore-fleet``, the service on Ray Serve): ``version=`` picks
the policy version there (sent as the ``application`` metadata Ray Serve routes by), and
``served_version()`` says which version answers.

Safe in a control loop: every ``session.step`` answers or raises within ``step_timeout`` (1 s by
default), reconnects included. A stream limit reached (RESOURCE_EXHAUSTED: the robot's own dead
stream may still hold its slot) and a dropped connection (UNAVAILABLE) are retried with backoff
inside that time. After a reconnect the session checks that the server still serves the policy
it started with (GetSpec's ``model_sha256`` and spec JSON) and raises ``PolicyChangedError`` if
not: replaying frames into another policy would give actions of a policy nobody chose. A client
that names a fleet ``version`` chose the version, not a file: it follows that version through
rolling upgrades, and only a new policy with another contract (frame size, K, action size or
bounds, env) raises.

Errors are typed: every failure from the server is a ``PolicyServerError`` carrying the gRPC
status code, with subclasses for the cases a caller handles differently.
"""

from __future__ import annotations

import io
import logging
import os
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import grpc
import numpy as np

from semore_runtime.proto_gen.semore.v1 import policy_pb2, policy_pb2_grpc
from semore_runtime.spec import PolicySpec
from semore_runtime.tokens import read_tokens

log = logging.getLogger(__name__)

Encoding = Literal["raw", "jpeg", "png"]
_ENCODINGS = {"raw": policy_pb2.Frame.RAW_RGB8, "jpeg": policy_pb2.Frame.JPEG, "png": policy_pb2.Frame.PNG}
# The metadata Ray Serve's gRPC proxy routes a call by: in a fleet, each policy version is one
# Serve application of that name.
FLEET_VERSION_KEY = "application"
# Codes worth retrying on a new call: the server or the connection went away, or the server is
# at its stream limit (a reconnecting robot's dead stream may hold a slot until it times out).
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})
# Why a step must answer within 1 s by default: a control loop runs at 10-50 Hz, so a step still
# unanswered after 1 s has missed 10-50 control periods and the robot must fall back to its safe
# action; yet 1 s is ~500 times a LAN step (~2 ms), room for a reconnect, a K-frame replay and a
# garbage-collection pause on either side.
DEFAULT_STEP_TIMEOUT_S = 1.0
# The GetSpec fields a session's frames and actions depend on: a policy that keeps them all can
# take over a session's stream (a fleet version's rolling upgrade); one that changes any cannot.
CONTRACT_FIELDS = (
    "height",
    "width",
    "channels",
    "frame_stack",
    "action_dim",
    "action_low",
    "action_high",
    "env_id",
)


class PolicyServerError(RuntimeError):
    """A call to the policy server failed; ``code`` is the grpc.StatusCode, ``details`` its message."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class InvalidInputError(PolicyServerError):
    """INVALID_ARGUMENT: the server rejected a frame or request (wrong size, corrupt image...)."""


class AuthenticationError(PolicyServerError):
    """UNAUTHENTICATED / PERMISSION_DENIED: missing or wrong token, or a client certificate problem.

    The one type for both ends: the servers' token check raises it (``serve.security.TokenFile``)
    and a client gets it back from the status it ends the call with.
    """


class ServerBusyError(PolicyServerError):
    """RESOURCE_EXHAUSTED: too many streams open, or a message over the size limit."""


class PolicyUnavailableError(PolicyServerError):
    """UNAVAILABLE (or a deadline) even after the retries: the server cannot be reached."""


class PolicyChangedError(PolicyServerError):
    """After a reconnect the server serves another policy (model file or spec) than the session's."""


_ERROR_TYPES = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidInputError,
    grpc.StatusCode.UNAUTHENTICATED: AuthenticationError,
    grpc.StatusCode.PERMISSION_DENIED: AuthenticationError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ServerBusyError,
    grpc.StatusCode.UNAVAILABLE: PolicyUnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: PolicyUnavailableError,
}


def server_error(code: grpc.StatusCode, details: str) -> PolicyServerError:
    """The typed error for a status code."""
    return _ERROR_TYPES.get(code, PolicyServerError)(code, details)


def _retryable(error: PolicyServerError) -> bool:
    # grpc reports a message over the size limit as RESOURCE_EXHAUSTED too: sending it again fails again.
    return error.code in RETRYABLE and "larger than max" not in error.details


def _from_rpc_error(exc: grpc.RpcError) -> PolicyServerError:
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return server_error(code or grpc.StatusCode.UNKNOWN, details or "")


def _action_array(response: policy_pb2.Action) -> np.ndarray:
    # fromiter with a count: a quarter of np.asarray's time on a protobuf repeated field.
    return np.fromiter(response.action, np.float32, len(response.action))


def _read(value: bytes | str | os.PathLike | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return Path(value).read_bytes()


class _Backoff:
    """Exponential backoff with full jitter: many robots reconnecting at once must not stampede."""

    def __init__(self, initial: float, maximum: float, retries: int) -> None:
        self.initial, self.maximum, self.retries = initial, maximum, retries

    def delays(self) -> Iterator[float]:
        delay = self.initial
        for _ in range(self.retries):
            yield random.uniform(0.5 * delay, delay)
            delay = min(self.maximum, delay * 2)


class PolicyClient:
    """A connection to semore-serve.

    ``target`` is "host:port". TLS: pass ``root_certificates`` (the CA that signed the server's
    certificate; PEM bytes or a path) or ``tls=True`` for the system roots; ``client_cert`` and
    ``client_key`` add mutual TLS. ``token`` (or ``token_file``) sends ``authorization: Bearer``.
    ``encoding`` picks how frames travel: "raw" (fastest on a LAN), "jpeg" or "png" (need Pillow).
    ``version`` names the policy version to ask a fleet for; a lone semore-serve ignores it.
    ``timeout`` bounds each unary call (``act``, ``spec``); ``step_timeout`` bounds each
    ``session.step``, retries and reconnects included (None: wait for ever, never in a control loop).
    """

    def __init__(
        self,
        target: str,
        *,
        tls: bool = False,
        root_certificates: bytes | str | os.PathLike | None = None,
        client_cert: bytes | str | os.PathLike | None = None,
        client_key: bytes | str | os.PathLike | None = None,
        server_name: str | None = None,
        token: str | None = None,
        token_file: str | os.PathLike | None = None,
        timeout: float = 10.0,
        retries: int = 6,
        backoff_initial: float = 0.05,
        backoff_max: float = 2.0,
        encoding: Encoding = "raw",
        jpeg_quality: int = 95,
        max_message_bytes: int = 64 * 1024 * 1024,
        step_timeout: float | None = DEFAULT_STEP_TIMEOUT_S,
        version: str | None = None,
    ) -> None:
        if encoding not in _ENCODINGS:
            raise ValueError(f"encoding must be one of {sorted(_ENCODINGS)}, got {encoding!r}")
        if step_timeout is not None and step_timeout <= 0:
            raise ValueError(f"step_timeout must be > 0 seconds (or None), got {step_timeout}")
        if (client_cert is None) != (client_key is None):
            raise ValueError("client_cert and client_key go together (mutual TLS)")
        self.target = target
        self.timeout = timeout
        self.encoding = encoding
        self.jpeg_quality = jpeg_quality
        self.step_timeout = step_timeout
        self._backoff = _Backoff(backoff_initial, backoff_max, retries)
        if token_file is not None:
            token = read_tokens(token_file)[0]
        metadata = [("authorization", f"Bearer {token}")] if token else []
        if version:
            metadata.append((FLEET_VERSION_KEY, version))
        self._metadata: tuple[tuple[str, str], ...] = tuple(metadata)
        self._same_policy_fields = CONTRACT_FIELDS if version else ("model_sha256", "spec_json")
        options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.keepalive_time_ms", 10_000),  # notice a dead server within ~15 s
            ("grpc.keepalive_timeout_ms", 5_000),
            ("grpc.http2.max_pings_without_data", 0),  # keep pinging on a quiet stream too
            # Retries are ours (with frame replay); grpc's transparent retries would hide drops.
            ("grpc.enable_retries", 0),
            # Our own reconnect loop paces itself; don't let a past failure delay the next connect.
            ("grpc.initial_reconnect_backoff_ms", max(10, int(backoff_initial * 1000))),
            ("grpc.max_reconnect_backoff_ms", max(10, int(backoff_max * 1000))),
        ]
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        self._options = options
        self._creds: grpc.ChannelCredentials | None = None
        if tls or root_certificates is not None or client_cert is not None:
            self._creds = grpc.ssl_channel_credentials(
                root_certificates=_read(root_certificates),
                private_key=_read(client_key),
                certificate_chain=_read(client_cert),
            )
            self._channel = grpc.secure_channel(target, self._creds, options=options)
        else:
            host = target.rsplit(":", 1)[0].strip("[]")
            if token and host not in ("127.0.0.1", "localhost", "::1"):
                log.warning("sending a bearer token to %s without TLS", target)
            self._channel = grpc.insecure_channel(target, options=options)
        self._stub = policy_pb2_grpc.PolicyServiceStub(self._channel)
        self._spec_response: policy_pb2.GetSpecResponse | None = None
        self._spec: PolicySpec | None = None
        self._seq = 0
        self._seq_lock = threading.Lock()

    # -- plumbing --------------------------------------------------------------------------
    def _next_seq(self) -> int:
        with self._seq_lock:
            self._seq += 1
            return self._seq

    def _call_with_retry(self, method, request):
        """A unary call, retried with backoff while the server is unavailable or at its limits."""
        delays = self._backoff.delays()
        while True:
            try:
                return method(request, timeout=self.timeout, metadata=self._metadata)
            except grpc.RpcError as exc:
                error = _from_rpc_error(exc)
                delay = next(delays, None) if _retryable(error) else None
                if delay is None:
                    raise error from None
                log.info("policy server refused (%s), retrying in %.2f s", error.details, delay)
                time.sleep(delay)

    def encode_frame(self, frame: np.ndarray) -> policy_pb2.Frame:
        """One uint8 [H, W, 3] RGB frame as a wire Frame in this client's encoding."""
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"a frame must be [H, W, 3], got shape {frame.shape}")
        if frame.dtype != np.uint8:
            raise ValueError(f"frames must be uint8, got {frame.dtype}")
        h, w = frame.shape[:2]
        if self.encoding == "raw":
            data = np.ascontiguousarray(frame).tobytes()
        else:
            try:
                from PIL import Image
            except ImportError as exc:  # Pillow is not a runtime dependency
                raise ImportError(f"encoding={self.encoding!r} needs Pillow: pip install pillow") from exc
            buffer = io.BytesIO()
            if self.encoding == "jpeg":
                Image.fromarray(frame).save(buffer, format="JPEG", quality=self.jpeg_quality)
            else:
                Image.fromarray(frame).save(buffer, format="PNG", compress_level=1)
            data = buffer.getvalue()
        return policy_pb2.Frame(data=data, height=h, width=w, encoding=_ENCODINGS[self.encoding])

    # -- API -------------------------------------------------------------------------------
    def _get_spec(self) -> policy_pb2.GetSpecResponse:
        if self._spec_response is None:
            self._spec_response = self._call_with_retry(self._stub.GetSpec, policy_pb2.GetSpecRequest())
        return self._spec_response

    def _check_same_policy(self, timeout: float | None) -> None:
        """Raises PolicyChangedError unless the server still serves the policy fetched first.

        Without a fleet version that is the same file and spec; with one, the same contract.
        """
        first = self._get_spec()
        try:  # one try: the session's step loop retries within its deadline
            now = self._stub.GetSpec(
                policy_pb2.GetSpecRequest(), timeout=timeout or self.timeout, metadata=self._metadata
            )
        except grpc.RpcError as exc:
            raise _from_rpc_error(exc) from None
        changed = [f for f in self._same_policy_fields if getattr(now, f) != getattr(first, f)]
        if changed:
            raise PolicyChangedError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{self.target} now serves another policy ({', '.join(changed)} changed; model sha256 "
                f"{now.model_sha256[:12] or '?'}, this session started with "
                f"{first.model_sha256[:12] or '?'}): open a new client",
            )

    def spec(self) -> PolicySpec:
        """The served policy's PolicySpec (fetched once, then cached)."""
        if self._spec is None:
            self._spec = PolicySpec.model_validate_json(self._get_spec().spec_json)
        return self._spec

    def served_version(self) -> str:
        """The policy version that answers (a fleet's version name; "" from a lone semore-serve)."""
        return self._get_spec().version

    def act(self, frames: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Stateless: K frames [K, H, W, 3], oldest first -> action [A] (float32)."""
        stack = [self.encode_frame(f) for f in frames]
        response = self._call_with_retry(
            self._stub.Act, policy_pb2.ActRequest(seq=self._next_seq(), frames=stack)
        )
        return _action_array(response)

    def session(self) -> PolicySession:
        """Opens a streaming session (the server keeps the frame stack); close it when done."""
        return PolicySession(self)

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Blocks until the channel connects (not that the server is SERVING: see the health service)."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise PolicyUnavailableError(
                grpc.StatusCode.UNAVAILABLE, f"no connection to {self.target} in {timeout} s"
            ) from None

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> PolicyClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_CLOSE = object()


class _Stream:
    """One StreamAct call on grpc's sync API: a request queue that grpc's sender thread drains.

    (A grpc.aio variant driven from the caller's thread was measured too: no faster on the
    2-core target, and it ties a session to one thread, so the plain sync API it is.)

    The response iterator has no per-message timeout, so a watchdog thread enforces the step
    deadline: it wakes a few times per timeout and cancels the call once a roundtrip outlives its
    deadline. The stepping thread reads responses directly: the deadline costs it two uncontended
    lock acquisitions per step, not a thread hop.
    """

    def __init__(self, client: PolicyClient) -> None:
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self.call = client._stub.StreamAct(self._iter_requests(), metadata=client._metadata)
        self._lock = threading.Lock()
        self._deadline: float | None = None  # of the roundtrip in progress
        self._expired = False
        self._closed = threading.Event()
        if client.step_timeout is not None:
            period = min(0.05, client.step_timeout / 4)
            threading.Thread(
                target=self._watch, args=(period,), name="semore-stream-watchdog", daemon=True
            ).start()

    def _iter_requests(self):
        get = self._requests.get
        while True:
            item = get()
            if item is _CLOSE:
                return
            yield item

    def _watch(self, period: float) -> None:
        while not self._closed.wait(period):
            with self._lock:
                if self._deadline is not None and time.monotonic() > self._deadline:
                    self._expired = True
                    self.call.cancel()

    def roundtrip(self, observation: policy_pb2.Observation, deadline: float | None) -> policy_pb2.Action:
        """Sends one observation and waits for its action; past ``deadline`` (monotonic) it raises."""
        with self._lock:
            self._deadline = deadline
        try:
            self._requests.put(observation)
            response = next(self.call)
        except grpc.RpcError:
            if not self._expired:
                raise
            response = None
        with self._lock:
            self._deadline = None
            expired = self._expired
        if expired:
            raise server_error(grpc.StatusCode.DEADLINE_EXCEEDED, "no action within the step timeout")
        return response

    def close(self) -> None:
        self._closed.set()
        self._requests.put(_CLOSE)
        self.call.cancel()


class PolicySession:
    """A StreamAct stream: ``step(frame)`` per env step, ``reset()`` at the start of an episode.

    Not thread-safe: one session per control loop (open more sessions for more robots).
    ``last`` holds the latest Action message (seq, server-side inference_us, server_us, batch_size).
    """

    def __init__(self, client: PolicyClient) -> None:
        self._client = client
        self._stream: _Stream | None = None
        self._reset_next = True
        # The frames since the last reset, at most K - 1 before the current one: what a new
        # stream must be fed to rebuild the server's stack after a reconnect.
        self._history: deque[policy_pb2.Frame] = deque()
        self._k: int | None = None
        self.last: policy_pb2.Action | None = None
        self.reconnects = 0
        self._opened_once = False
        self._closed = False

    def reset(self) -> None:
        """The next step starts a new episode (its frame fills the server's stack)."""
        self._reset_next = True

    def step(self, frame: np.ndarray) -> np.ndarray:
        """Sends one uint8 [H, W, 3] frame, returns the action [A] (float32) for the updated stack.

        Answers or raises within the client's ``step_timeout``: a broken stream or a full server
        is retried with backoff while time is left, then the last error is raised.
        """
        if self._closed:
            raise RuntimeError("the session is closed")
        if self._k is None:
            self._k = self._client.spec().frame_stack
        timeout = self._client.step_timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        wire = self._client.encode_frame(frame)
        reset = self._reset_next
        history = self._history
        if reset:
            history.clear()
        delays = self._client._backoff.delays()
        while True:
            try:
                if self._stream is None:
                    self._stream = self._reopen(deadline)
                    if not reset:
                        self._replay(history, deadline)
                action = self._send(wire, reset, deadline)
                break
            except PolicyServerError as error:
                self._drop_stream()
                delay = next(delays, None) if _retryable(error) else None
                if delay is not None and deadline is not None:
                    delay = min(delay, deadline - time.monotonic())
                if delay is None or delay <= 0:
                    raise
                log.info("policy stream refused (%s), reconnecting in %.2f s", error.details, delay)
                time.sleep(delay)
                self.reconnects += 1
        self._reset_next = False
        history.append(wire)
        while len(history) > self._k - 1:
            history.popleft()
        return action

    def _reopen(self, deadline: float | None) -> _Stream:
        """A new stream; from the second on, only once the server is known to serve the same policy."""
        if self._opened_once:
            remaining = None if deadline is None else max(0.001, deadline - time.monotonic())
            self._client._check_same_policy(remaining)
        self._opened_once = True
        return _Stream(self._client)

    def _send(self, wire: policy_pb2.Frame, reset: bool, deadline: float | None) -> np.ndarray:
        seq = self._client._next_seq()
        try:
            response = self._stream.roundtrip(
                policy_pb2.Observation(seq=seq, frame=wire, reset=reset), deadline
            )
        except grpc.RpcError as exc:
            error = _from_rpc_error(exc)
            if error.code == grpc.StatusCode.DEADLINE_EXCEEDED:
                # The call carries no grpc deadline (the step timeout is the watchdog's), so this
                # is the server closing a stream that sat idle (--idle-timeout) while the robot
                # paused: a new stream, with the replay, carries on.
                raise server_error(grpc.StatusCode.UNAVAILABLE, error.details) from None
            raise error from None
        except StopIteration:
            raise server_error(grpc.StatusCode.UNAVAILABLE, "the server ended the stream") from None
        if response.seq != seq:
            raise PolicyServerError(
                grpc.StatusCode.INTERNAL, f"response for seq {response.seq} arrived while waiting for {seq}"
            )
        self.last = response
        return _action_array(response)

    def _replay(self, history: deque[policy_pb2.Frame], deadline: float | None) -> None:
        # The first replayed frame fills the stack, the rest shift in: the server's stack is then
        # exactly what the broken stream had before this step.
        for i, wire in enumerate(history):
            self._send(wire, i == 0, deadline)

    def _drop_stream(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def close(self) -> None:
        """Ends the stream; the server frees its stack."""
        if self._closed:
            return
        self._closed = True
        self._drop_stream()

    def __enter__(self) -> PolicySession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
