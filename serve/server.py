"""semore-serve: PolicyService on grpc.aio over the PolicyCore, and the server around it (health,
reflection, TLS, auth, metrics).

The service's rules live in ``serve.core``; this module is its grpc.aio adapter. grpc.aio on
purpose: the sync server's thread per stream spent ~2.5x more CPU per frame than an event loop on
the 2-core target (GIL hand-offs between dozens of threads), which capped the aggregate throughput
that micro-batching is meant to buy. Handlers run on one event loop in a background thread; the
MicroBatcher thread runs the policy and wakes the loop once per batch. ``PolicyServer`` is a plain
synchronous facade, so the CLI and tests need no asyncio.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading
from pathlib import Path
from typing import NoReturn

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from pydantic import Field, model_validator

from semore_runtime.client import PolicyServerError
from semore_runtime.options import CommandOptions
from semore_runtime.policy import Device, OnnxPolicy, file_sha256
from semore_runtime.proto_gen.semore.v1 import policy_pb2, policy_pb2_grpc
from serve.core import PolicyCore
from serve.decode import MAX_DECODE_PIXELS
from serve.limits import IdleTimer, SideCallLimit
from serve.security import TokenAuthInterceptor, server_credentials
from serve.wire import add_policy_service

log = logging.getLogger(__name__)

SERVICE_NAME = policy_pb2.DESCRIPTOR.services_by_name["PolicyService"].full_name  # "semore.v1.PolicyService"
HEALTH_SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
# Act calls that may be in flight at once (beyond, RESOURCE_EXHAUSTED). PolicyService calls count
# against this and --max-streams only: health and reflection never take a policy slot, so an
# orchestrator's probes (or a flood of them) cannot lock robots out, nor robots the probes.
MAX_UNARY_CALLS = 64
# Open health watches and reflection streams: their own caps, overall and per client address (an
# orchestrator watches a service or two); a health Check is never capped. See SideCallLimit.
MAX_SIDE_STREAMS = 64
MAX_SIDE_STREAMS_PER_CLIENT = 8
MIN_MESSAGE_BYTES = 4 * 1024 * 1024
STREAM_HEADER = "semore-stream-id"  # initial metadata of an accepted StreamAct


class ServeConfig(CommandOptions):
    """Everything semore-serve can be told: each field is one option (semore_runtime.options builds them),
    checked here whether it comes from the command line or from Python."""

    model: Path = Field(description="exported policy .onnx file")
    host: str = Field("127.0.0.1", description="bind address (loopback; 0.0.0.0 for all)")
    port: int = Field(50051, ge=0, le=65535, description="gRPC port (0 picks a free one)")
    device: Device = Field("auto", description="where the policy runs (auto: CUDA when available)")
    max_batch: int = Field(32, ge=1, description="most requests per model call")
    batch_wait_us: int = Field(
        500,
        ge=0,
        description="longest wait in microseconds for more requests to join a batch (only while "
        "other streams are open)",
    )
    max_streams: int = Field(256, ge=1, description="concurrent StreamAct limit (RESOURCE_EXHAUSTED beyond)")
    max_streams_per_client: int | None = Field(
        None,
        ge=1,
        description="concurrent StreamAct limit per client IP address, so one client cannot take every "
        "slot (default: half of --max-streams, at least 1)",
    )
    idle_timeout_s: float = Field(
        60.0,
        gt=0,
        description="close a stream (DEADLINE_EXCEEDED) that sends nothing for this many seconds, "
        "so a vanished robot does not hold its slot",
        json_schema_extra={"flag": "--idle-timeout"},
    )
    resize: bool = Field(False, description="resize frames of another size instead of rejecting them")
    max_decode_pixels: int = Field(
        MAX_DECODE_PIXELS,
        ge=1,
        description="with --resize: the most pixels (height x width) a frame may have; larger JPEG/PNG "
        "frames are refused from their header, before decoding",
    )
    tls_cert: Path | None = Field(None, description="server certificate chain (PEM); enables TLS")
    tls_key: Path | None = Field(None, description="server private key (PEM)")
    client_ca: Path | None = Field(None, description="CA bundle (PEM) for client certificates: mutual TLS")
    token_file: Path | None = Field(None, description="accepted bearer tokens, one per line: auth on")
    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="serve Prometheus /metrics on this port (same host)"
    )
    max_message_bytes: int | None = Field(
        None, ge=1, description="per-message size limit (default 4 MiB or K raw frames)"
    )
    threads: int | None = Field(None, ge=1, description="ONNX Runtime intra-op threads (default: its own)")
    # Off by default: the gRPC threads need the cores.
    spinning: bool = Field(
        False,
        description="let ONNX Runtime threads spin (faster on idle cores)",
        json_schema_extra={"flag": "--spin"},
    )
    drain_timeout_s: float = Field(
        10.0,
        ge=0,
        description="seconds open streams get after SIGTERM",
        json_schema_extra={"flag": "--drain-timeout"},
    )
    # On: a lone stream's request runs on the loop, skipping the batcher hop.
    inline_when_alone: bool = Field(
        True,
        description="always go through the batcher thread, even for a lone stream (for comparisons)",
        json_schema_extra={"flag": "--no-inline"},
    )

    @model_validator(mode="after")
    def _tls_options_go_together(self) -> ServeConfig:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("--tls-cert and --tls-key go together")
        if self.client_ca and not self.tls_cert:
            raise ValueError("--client-ca needs --tls-cert and --tls-key (mutual TLS is TLS first)")
        return self

    def core_settings(self) -> dict:
        """The PolicyCore settings these options give (all but the policy and its file's hash)."""
        return {
            "version": "",  # semore-serve serves one file and no version name
            "resize": self.resize,
            "max_decode_pixels": self.max_decode_pixels,
            "max_batch": self.max_batch,
            "batch_wait_s": self.batch_wait_us / 1e6,
            "inline_when_alone": self.inline_when_alone,
            "token_file": self.token_file,
            "max_streams": self.max_streams,
            "max_streams_per_client": self.max_streams_per_client or max(1, self.max_streams // 2),
            "max_unary_calls": MAX_UNARY_CALLS,
        }


def host_port(host: str, port: int) -> str:
    """A gRPC address: "host:port", an IPv6 literal in brackets ("--host ::1" -> "[::1]:50051")."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine (a host name other than localhost might not)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class PolicyServicer(policy_pb2_grpc.PolicyServiceServicer):
    """semore.v1.PolicyService on grpc.aio: each RPC hands its call to the PolicyCore, and a call
    that raised ends with the status the core names. What is grpc.aio's alone stays here: a
    stream's initial metadata, its idle timeout, and freeing it when grpc learns the call is gone.
    """

    def __init__(self, core: PolicyCore, idle_timeout_s: float) -> None:
        self.core = core
        self.idle_timeout_s = idle_timeout_s

    async def _refuse(self, context, method: str, error: Exception) -> NoReturn:
        await context.abort(*self.core.refuse(method, error))

    async def GetSpec(self, request, context):
        try:
            return self.core.get_spec(request)
        except Exception as exc:
            await self._refuse(context, "GetSpec", exc)

    async def Act(self, request, context):
        try:
            return await self.core.act(request, context.peer())
        except Exception as exc:
            await self._refuse(context, "Act", exc)

    async def StreamAct(self, request_iterator, context):
        try:
            stream = self.core.open_stream(context.peer())
        except Exception as exc:
            await self._refuse(context, "StreamAct", exc)
        # A cancelled call may leave this generator suspended until it is garbage collected.
        context.add_done_callback(lambda _ctx: stream.close("rpc terminated"))
        # Tells the client at once that the stream holds a slot (a client may wait for this header
        # before its first frame); a refused stream (limit, auth) ends with a status instead.
        await context.send_initial_metadata(((STREAM_HEADER, str(stream.id)),))
        idle = IdleTimer(self.idle_timeout_s)
        try:
            with stream:
                try:
                    async for obs in request_iterator:
                        idle.touch()
                        action = await stream.step(obs)
                        yield action
                        idle.touch()
                except asyncio.CancelledError:
                    if not idle.fired:
                        raise
                    raise PolicyServerError(
                        grpc.StatusCode.DEADLINE_EXCEEDED,
                        f"no observation for {self.idle_timeout_s:g} s (--idle-timeout): the stream is closed",
                    ) from None
        except Exception as exc:
            await self._refuse(context, "StreamAct", exc)
        finally:
            idle.cancel()


class PolicyServer:
    """A bound, not yet started semore-serve; ``start()`` warms up and reports SERVING.

    Construction loads the model and binds the port (a bad model or a taken port fails before
    anything else happens); health answers NOT_SERVING until the warm-up is done. The gRPC
    server lives on an event loop in a background thread; every method here is synchronous.
    """

    def __init__(self, config: ServeConfig, policy: OnnxPolicy | None = None) -> None:
        self.config = config
        if policy is None:
            policy = OnnxPolicy(
                config.model, device=config.device, threads=config.threads, spinning=config.spinning
            )
        self.policy = policy
        spec = policy.spec
        # The hash lets a reconnecting client notice that a restart brought another policy.
        self.core = PolicyCore(policy, model_sha256=file_sha256(policy.path), **config.core_settings())
        self.servicer = PolicyServicer(self.core, config.idle_timeout_s)
        raw_stack = spec.frame_stack * spec.height * spec.width * spec.channels
        self.max_message_bytes = config.max_message_bytes or max(MIN_MESSAGE_BYTES, 2 * raw_stack + 65536)
        self.metrics_port: int | None = None
        self._stop_lock = threading.Lock()
        self._stopping = False
        self._stopped = threading.Event()

        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(
            target=self._loop.run_forever, name="semore-grpc-loop", daemon=True
        )
        self._loop_thread.start()
        try:
            self.port = self._run(self._build())
        except BaseException:
            self._shutdown_loop()
            raise

    # -- event-loop plumbing ---------------------------------------------------------------
    def _run(self, coro, timeout: float | None = 30.0):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _shutdown_loop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop_thread.join(10)
        if not self._loop.is_running():
            self._loop.close()

    async def _build(self) -> int:
        config = self.config
        options = [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.so_reuseport", 0),  # a second server on a taken port must fail, not share it
            ("grpc.keepalive_time_ms", 20_000),  # find robots that dropped off the network
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
            ("grpc.keepalive_permit_without_calls", 1),
        ]
        self.side_calls = SideCallLimit(MAX_SIDE_STREAMS, MAX_SIDE_STREAMS_PER_CLIENT, f"/{SERVICE_NAME}/")
        interceptors: list[grpc.aio.ServerInterceptor] = [self.side_calls]
        if self.core.tokens is not None:
            interceptors.append(TokenAuthInterceptor(self.core.authenticate, self.core.refuse))
        self.grpc_server = grpc.aio.server(
            interceptors=interceptors,
            options=options,
        )
        self.health = health.aio.HealthServicer()
        await self.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.NOT_SERVING)
        add_policy_service(self.servicer, self.grpc_server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc_server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME), self.grpc_server
        )
        address = host_port(config.host, config.port)
        try:
            if config.tls_cert:
                creds = server_credentials(config.tls_cert, config.tls_key, config.client_ca)
                port = self.grpc_server.add_secure_port(address, creds)
            else:
                port = self.grpc_server.add_insecure_port(address)
        except RuntimeError as exc:  # grpc raises RuntimeError when it cannot bind
            raise OSError(f"cannot bind {address}: {exc}") from exc
        if port == 0:
            raise OSError(f"cannot bind {address} (port in use or address not available)")
        return port

    async def _set_health(self, status) -> None:
        await self.health.set("", status)
        await self.health.set(SERVICE_NAME, status)

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def address(self) -> str:
        return host_port(self.config.host, self.port)

    @property
    def active_streams(self) -> int:
        return len(self.core.streams)

    def start_listening(self) -> None:
        """Starts gRPC (health answers NOT_SERVING) and the batcher; no warm-up yet."""
        missing = [
            what
            for what, on in (("TLS", self.config.tls_cert), ("a token file", self.config.token_file))
            if not on
        ]
        if missing and not is_loopback(self.config.host):
            log.warning(
                "listening on %s without %s: anyone who can reach the port can watch the frames "
                "or drive the robot",
                self.address,
                " or ".join(missing),
                extra={"event": "insecure_bind", "address": self.address, "missing": missing},
            )
        self.core.start()
        self._run(self.grpc_server.start())
        if self.config.metrics_port is not None:
            self.metrics_port = self.core.metrics.serve_http(self.config.metrics_port, self.config.host)

    def warm_up_and_serve(self) -> None:
        """Runs the policy at batch 1 and max-batch (first calls allocate), then reports SERVING."""
        spec = self.policy.spec
        warm_s = self.core.warm_up()
        self._run(self._set_health(health_pb2.HealthCheckResponse.SERVING))
        log.info(
            "serving %s on %s",
            self.config.model,
            self.address,
            extra={
                "event": "serving",
                "address": self.address,
                "provider": self.policy.provider,
                "env_id": spec.env_id,
                "stack_shape": list(spec.stack_shape),
                "action_dim": spec.action_dim,
                "max_batch": self.config.max_batch,
                "batch_wait_us": self.config.batch_wait_us,
                "max_streams": self.config.max_streams,
                "tls": bool(self.config.tls_cert),
                "mutual_tls": bool(self.config.client_ca),
                "auth": bool(self.config.token_file),
                "warmup_s": round(warm_s, 3),
            },
        )

    def reload_tokens(self) -> None:
        """Re-reads --token-file now (SIGHUP); open streams keep going, new calls see the new tokens."""
        self.core.reload_tokens()

    def start(self) -> PolicyServer:
        self.start_listening()
        self.warm_up_and_serve()
        return self

    async def _drain(self, grace: float) -> None:
        await self.health.enter_graceful_shutdown()
        stopping = asyncio.ensure_future(self.grpc_server.stop(grace))
        # grpc waits out the whole grace while any call is open, health Watch streams included;
        # once no policy work is left (no open stream, no Act in flight) the rest can be cut.
        idle_checks = 0
        while not stopping.done():
            await asyncio.wait({stopping}, timeout=0.05)
            idle_checks = idle_checks + 1 if self.core.batcher.producers == 0 else 0
            if idle_checks >= 2:
                await self.grpc_server.stop(None)
        await stopping

    def stop(self, grace: float | None = None) -> None:
        """Drains: NOT_SERVING, no new calls, open streams get ``grace`` seconds to finish, then stops.

        Every observation a stream handler has taken is answered before the batcher stops.
        Safe to call more than once and from several threads; a later, shorter grace wins.
        """
        grace = self.config.drain_timeout_s if grace is None else grace
        with self._stop_lock:
            first = not self._stopping
            self._stopping = True
        if not first:
            if not self._stopped.is_set() and self._loop.is_running():
                self._run(self.grpc_server.stop(grace), timeout=None)
            self._stopped.wait()
            return
        log.info(
            "draining: %d open streams, grace %.1f s",
            self.active_streams,
            grace,
            extra={"event": "draining", "streams": self.active_streams, "grace_s": grace},
        )
        self.core.ready = False
        try:
            self._run(self._drain(grace), timeout=None)
        finally:
            self.core.close()
            self._shutdown_loop()
            self._stopped.set()
            log.info("stopped", extra={"event": "stopped"})

    def force_stop(self) -> None:
        """Cancels every open call now (a second SIGTERM): cuts a running ``stop()`` short."""
        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(self.grpc_server.stop(None), self._loop)


def build_server(
    config: ServeConfig | None = None, policy: OnnxPolicy | None = None, **overrides
) -> PolicyServer:
    """Loads the model and binds the port (``port=0`` picks a free one); call ``.start()`` next.

    ``build_server(model=path, port=0)`` is the short form tests use.
    """
    if config is None:
        config = ServeConfig(**overrides)
    elif overrides:
        config = ServeConfig.model_validate({**config.model_dump(), **overrides})
    return PolicyServer(config, policy)
