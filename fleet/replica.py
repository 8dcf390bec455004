"""The Ray Serve deployment behind the fleet: ``semore.v1.PolicyService`` for one policy version.

Ray Serve's gRPC proxy receives the calls (it registers our committed stub's
``add_PolicyServiceServicer_to_server``, see ``SERVICER_FUNCTION``) and hands each one to a
replica method of the RPC's name. A replica is a thin adapter over semore-serve's transport-free
``serve.core.PolicyCore``, so a call is checked, decoded, batched and answered by the same code
on both servers, and a frame or token refused by one is refused by the other with the same
status and message. What is the fleet's own stays here: a call must name this replica's version,
and a StreamAct stream stays on the replica that took it, which keeps its frame stack, until a
rolling upgrade replaces that replica (see ``PolicyReplica._watch_version``).

Ray Serve's gRPC proxy takes no interceptors, so every RPC authenticates the call's metadata
(which the proxy forwards) before it does anything else. A call that raised ends at one place,
``_status``: Serve's proxy sends the status a method set on its context before raising.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import grpc
from ray import serve
from ray.exceptions import RayError
from ray.serve._private import constants as serve_constants
from ray.serve.exceptions import RayServeException

from fleet.config import ReplicaConfig
from semore_runtime.client import FLEET_VERSION_KEY, PolicyServerError, PolicyUnavailableError
from semore_runtime.policy import OnnxPolicy, PolicyLoadError, file_sha256
from semore_runtime.proto_gen.semore.v1 import policy_pb2, policy_pb2_grpc
from serve.core import PolicyCore
from serve.decode import MAX_DECODE_PIXELS

SERVICER_FUNCTION = (
    f"{policy_pb2_grpc.__name__}.{policy_pb2_grpc.add_PolicyServiceServicer_to_server.__name__}"
)
# How often a replica with open streams asks whether its version was upgraded.
_WATCH_PERIOD_S = 1.0
# Serve's max_ongoing_requests caps the calls a replica holds, so the core's own call and stream
# limits stay out of the way; and behind the proxy every call comes from the proxy's address, so
# a per-client limit could only hold every robot back at once.
_NO_LIMIT = sys.maxsize


class ReplicaRetiredError(PolicyUnavailableError):
    """A rolling upgrade replaced this replica: its streams end (UNAVAILABLE), to reconnect to a current one."""

    def __init__(self, details: str) -> None:
        super().__init__(grpc.StatusCode.UNAVAILABLE, details)


class UnknownVersionError(PolicyServerError):
    """The call names a version this replica does not serve (NOT_FOUND).

    With a single application deployed, Serve's proxy routes every call to it whatever
    ``application`` it names; a robot that asked for another policy must not get this one.
    """

    def __init__(self, details: str) -> None:
        super().__init__(grpc.StatusCode.NOT_FOUND, details)


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
        policy = OnnxPolicy(config.model, device=config.device, threads=config.threads, spinning=False)
        self.core = PolicyCore(
            policy,
            model_sha256=model_sha256,
            version=config.version,
            resize=config.resize,
            max_decode_pixels=MAX_DECODE_PIXELS,
            max_batch=config.max_batch,
            batch_wait_s=config.batch_wait_us / 1e6,
            # A lone robot's step runs on the replica's event loop, as on semore-serve.
            inline_when_alone=True,
            token_file=config.token_file,
            max_streams=_NO_LIMIT,
            max_streams_per_client=_NO_LIMIT,
            max_unary_calls=_NO_LIMIT,
        )
        self.core.start()
        self.core.warm_up()
        self._about = {
            "rollout": rollout,
            "model": str(config.model),
            "model_sha256": model_sha256,
            "provider": policy.provider,
            # Looked up here, in the replica's process, where the cluster's setting applies (Serve
            # pickles this class by value, so a module-level name would hold the driver's value).
            "ingress": "HAProxy" if serve_constants.RAY_SERVE_ENABLE_HA_PROXY else "Serve's gRPC proxy",
        }
        self._retired = False
        self._watcher: asyncio.Task | None = None
        self._calls = itertools.count(1)

    # -- helpers ---------------------------------------------------------------------------
    @contextmanager
    def _status(self, method: str, context) -> Iterator[None]:
        """The boundary: a call that raised sets the status code and details the core names."""
        try:
            yield
        except Exception as exc:
            code, details = self.core.refuse(method, exc)
            if context is not None:
                context.set_code(code)
                context.set_details(details)
            raise

    def _admit(self, context) -> None:
        """Lets a call in: an accepted token first (if auth is on), then this replica's version."""
        metadata = context.invocation_metadata() if context is not None else ()
        self.core.authenticate(metadata)
        asked = dict(metadata).get(FLEET_VERSION_KEY, self.config.version)
        if asked != self.config.version:
            raise UnknownVersionError(
                f"version {asked!r} is not deployed (this fleet serves {self.config.version!r})"
            )

    def _client(self) -> str:
        """Who the core sees calling: behind the proxy every call has the proxy's address, so each
        call is a client of its own (its own line in the decode pool)."""
        return f"call-{next(self._calls)}"

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

    # -- RPCs (Serve passes ``grpc_context`` to a method with a parameter of that name) -----
    async def GetSpec(
        self, request: policy_pb2.GetSpecRequest, grpc_context=None
    ) -> policy_pb2.GetSpecResponse:
        with self._status("GetSpec", grpc_context):
            self._admit(grpc_context)
            return self.core.get_spec(request)

    async def Act(self, request: policy_pb2.ActRequest, grpc_context=None) -> policy_pb2.Action:
        with self._status("Act", grpc_context):
            self._admit(grpc_context)
            return await self.core.act(request, self._client())

    async def StreamAct(
        self, observations: AsyncIterator[policy_pb2.Observation], grpc_context=None
    ) -> AsyncIterator[policy_pb2.Action]:
        with self._status("StreamAct", grpc_context):
            self._admit(grpc_context)
            if self._watcher is None:
                self._watcher = asyncio.create_task(self._watch_version())
            with self.core.open_stream(self._client()) as stream:
                async for obs in observations:
                    if self._retired:
                        raise ReplicaRetiredError(
                            f"version {self.config.version!r} was upgraded and this replica retires: reconnect"
                        )
                    yield await stream.step(obs)

    # -- for semore-fleet status and _watch_version (handle calls: not part of the gRPC service)
    def describe(self) -> dict[str, str | int]:
        """What this replica serves: its rollout stamp, model path and digest, ONNX provider, and
        the ingress that reaches it (control.FAST_PATH)."""
        return self._about
