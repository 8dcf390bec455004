"""The Ray Serve deployment behind the fleet: ``semore.v1.PolicyService`` for one policy version.

Ray Serve's gRPC proxy receives the calls (it registers our committed stub's
``add_PolicyServiceServicer_to_server``, see ``SERVICER_FUNCTION``) and hands each one to a
replica method of the RPC's name. A replica holds one ``OnnxPolicy``; every Act and every
StreamAct step goes through one ``@serve.batch`` method, so concurrent robots on a replica share
model calls. A StreamAct stream stays on the replica that took it, which keeps its frame stack,
until a rolling upgrade replaces that replica (see ``PolicyReplica._watch_version``).

Frames are decoded and checked by semore-serve's ``FrameDecoder``, tokens by semore-serve's
``TokenFile`` (same file format, re-read when it changes), so a frame or token refused by one
server is refused by the other with the same message. Ray Serve's gRPC proxy takes no
interceptors, so the token check cannot sit in front of the handlers as semore-serve's
``TokenAuthInterceptor`` does: every RPC calls ``TokenFile.check_token`` with the call's
metadata (which the proxy forwards) before it does anything else. Errors are typed inside and become gRPC statuses at one place,
``_grpc_status``: Serve's proxy sends the status a method set on its context before raising.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import grpc
import numpy as np
from ray import serve
from ray.exceptions import RayError
from ray.serve._private import constants as serve_constants
from ray.serve.exceptions import RayServeException

from fleet.config import ReplicaConfig
from semore_runtime.client import FLEET_VERSION_KEY
from semore_runtime.frame_stack import FrameStack
from semore_runtime.policy import NonFiniteActionError, OnnxPolicy, PolicyLoadError, file_sha256
from semore_runtime.proto_gen.semore.v1 import policy_pb2, policy_pb2_grpc
from serve.batcher import BatchResult
from serve.decode import RAW_RGB8, FrameDecoder, FrameError
from serve.messages import action_message, spec_response, stack_size_error
from serve.security import AuthenticationError, TokenFile

SERVICER_FUNCTION = (
    f"{policy_pb2_grpc.__name__}.{policy_pb2_grpc.add_PolicyServiceServicer_to_server.__name__}"
)
# How often a replica with open streams asks whether its version was upgraded.
_WATCH_PERIOD_S = 1.0


class ReplicaRetiredError(ConnectionError):
    """A rolling upgrade replaced this replica: its streams end, to reconnect to a current one."""


class UnknownVersionError(LookupError):
    """The call names a version this replica does not serve.

    With a single application deployed, Serve's proxy routes every call to it whatever
    ``application`` it names; a robot that asked for another policy must not get this one.
    """


# The status each typed error is answered with; anything else becomes INTERNAL (Serve's default).
_STATUS = {
    FrameError: grpc.StatusCode.INVALID_ARGUMENT,
    AuthenticationError: grpc.StatusCode.UNAUTHENTICATED,
    ReplicaRetiredError: grpc.StatusCode.UNAVAILABLE,
    UnknownVersionError: grpc.StatusCode.NOT_FOUND,
    NonFiniteActionError: grpc.StatusCode.INTERNAL,
}


@contextmanager
def _grpc_status(context) -> Iterator[None]:
    """The boundary: a typed error raised inside sets the call's status code and details."""
    try:
        yield
    except tuple(_STATUS) as exc:
        if context is not None:
            context.set_code(next(code for kind, code in _STATUS.items() if isinstance(exc, kind)))
            context.set_details(str(exc))
        raise


@serve.deployment(name="policy")
class PolicyReplica:
    """One replica of one policy version; ``fleet.control`` sets its resources and replica count."""

    def __init__(self, config: ReplicaConfig, model_sha256: str, rollout: int) -> None:
        """``rollout`` orders the deployments of a version (``fleet.control.deploy`` stamps each)."""
        # Each node reads the model from its own disk: refuse a copy that is not the deployed file,
        # or two replicas of one version could answer with different policies.
        found = file_sha256(config.model)
        if found != model_sha256:
            raise PolicyLoadError(
                f"{config.model} on this node is not the deployed policy (sha256 {found[:12]}, "
                f"deployed {model_sha256[:12]}): copy the same file to every node"
            )
        self.config = config
        self.policy = OnnxPolicy(config.model, device=config.device, threads=config.threads, spinning=False)
        self.spec = self.policy.spec
        self.auth = TokenFile(config.token_file) if config.token_file else None
        self.decoder = FrameDecoder(self.spec.height, self.spec.width, resize=config.resize)
        self._spec_response = spec_response(self.policy, config.resize, model_sha256, config.version)
        self._about = {
            "rollout": rollout,
            "model": str(config.model),
            "model_sha256": model_sha256,
            "provider": self.policy.provider,
            # Looked up here, in the replica's process, where the cluster's setting applies (Serve
            # pickles this class by value, so a module-level name would hold the driver's value).
            "ingress": "HAProxy" if serve_constants.RAY_SERVE_ENABLE_HA_PROXY else "Serve's gRPC proxy",
        }
        self._retired = False
        self._watcher: asyncio.Task | None = None
        self._batch.set_max_batch_size(config.max_batch)
        self._batch.set_batch_wait_timeout_s(config.batch_wait_ms / 1000)

    # -- helpers ---------------------------------------------------------------------------
    def _admit(self, context) -> None:
        """Lets a call in: an accepted token first (if auth is on), then this replica's version."""
        metadata = context.invocation_metadata() if context is not None else ()
        if self.auth is not None:
            self.auth.check_token(metadata)
        asked = dict(metadata).get(FLEET_VERSION_KEY, self.config.version)
        if asked != self.config.version:
            raise UnknownVersionError(
                f"version {asked!r} is not deployed (this fleet serves {self.config.version!r})"
            )

    async def _decode(self, frame: policy_pb2.Frame, where: str) -> np.ndarray:
        """A policy-sized frame; a compressed one is decoded off the replica's event loop."""
        try:
            if frame.encoding == RAW_RGB8:
                return self.decoder.decode(frame)
            return await asyncio.to_thread(self.decoder.decode, frame)
        except FrameError as exc:
            raise FrameError(f"{where}: {exc}", exc.reason) from exc

    async def _watch_version(self) -> None:
        """Retires this replica's streams once a later deployment of its version serves.

        Serve stops a replaced replica only when its open calls end, or kills it after
        ``graceful_shutdown_timeout_s`` (the client would see INTERNAL), and a robot's StreamAct
        stream need never end by itself. So a replica with streams asks its own version, through
        Serve's router, which rollout serves; once that is a later one (the router sends only to
        serving replicas, so the new ones serve), each stream ends at its next observation with
        UNAVAILABLE, and ``PolicySession`` reconnects to a current replica and replays its stack.
        """
        handle = serve.get_app_handle(self.config.version)
        while not self._retired:
            await asyncio.sleep(_WATCH_PERIOD_S)
            try:
                current = await handle.describe.remote()
            except (RayError, RayServeException):  # the version is being removed, or no replica runs
                continue
            self._retired = current["rollout"] > self._about["rollout"]

    def _infer(self, stacks: list[np.ndarray]) -> list[BatchResult]:
        t0 = time.perf_counter()
        actions = self.policy.act(np.stack(stacks))
        seconds = time.perf_counter() - t0
        return [BatchResult(action, seconds, len(stacks)) for action in actions]

    @serve.batch
    async def _batch(self, stacks: list[np.ndarray]) -> list[BatchResult | NonFiniteActionError]:
        """One model call for every stack that queued while the previous call ran.

        OnnxPolicy refuses a batch with a non-finite action in it; then each stack runs alone,
        so only the call whose stack gave it fails (its error is its result, raised by ``_act``).
        """
        try:
            return self._infer(stacks)
        except NonFiniteActionError:
            results: list[BatchResult | NonFiniteActionError] = []
            for stack in stacks:
                try:
                    results += self._infer([stack])
                except NonFiniteActionError as exc:
                    results.append(exc)
            return results

    async def _act(self, stack: np.ndarray) -> BatchResult:
        result = await self._batch(stack)
        if isinstance(result, NonFiniteActionError):
            raise NonFiniteActionError(f"{result}; no action was sent")
        return result

    @staticmethod
    def _answer(seq: int, result: BatchResult, t0: float) -> policy_pb2.Action:
        return action_message(seq, result, time.perf_counter() - t0)

    # -- RPCs (Serve passes ``grpc_context`` to a method with a parameter of that name) -----
    async def GetSpec(
        self, request: policy_pb2.GetSpecRequest, grpc_context=None
    ) -> policy_pb2.GetSpecResponse:
        with _grpc_status(grpc_context):
            self._admit(grpc_context)
        return self._spec_response

    async def Act(self, request: policy_pb2.ActRequest, grpc_context=None) -> policy_pb2.Action:
        t0 = time.perf_counter()
        with _grpc_status(grpc_context):
            self._admit(grpc_context)
            refused = stack_size_error(self.spec, len(request.frames))
            if refused is not None:
                raise FrameError(refused)
            frames = [await self._decode(frame, f"frames[{i}]") for i, frame in enumerate(request.frames)]
            result = await self._act(np.stack(frames))
        return self._answer(request.seq, result, t0)

    async def StreamAct(
        self, observations: AsyncIterator[policy_pb2.Observation], grpc_context=None
    ) -> AsyncIterator[policy_pb2.Action]:
        with _grpc_status(grpc_context):
            self._admit(grpc_context)
            if self._watcher is None:
                self._watcher = asyncio.create_task(self._watch_version())
            stack = FrameStack(self.spec.frame_stack, self.spec.frame_shape)
            async for obs in observations:
                t0 = time.perf_counter()
                if self._retired:
                    raise ReplicaRetiredError(
                        f"version {self.config.version!r} was upgraded and this replica retires: reconnect"
                    )
                if not obs.HasField("frame"):
                    raise FrameError(f"observation seq={obs.seq} has no frame")
                frame = await self._decode(obs.frame, f"observation seq={obs.seq}")
                if obs.reset:
                    stack.reset()
                yield self._answer(obs.seq, await self._act(stack.push(frame)), t0)

    # -- for semore-fleet status and _watch_version (handle calls: not part of the gRPC service)
    def describe(self) -> dict[str, str | int]:
        """What this replica serves: its rollout stamp, model path and digest, ONNX provider, and
        the ingress that reaches it (control.FAST_PATH)."""
        return self._about
