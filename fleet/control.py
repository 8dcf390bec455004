"""Putting policy versions up on a Ray cluster, reading their status, taking them down.

Every function here runs in a Ray driver (``connect`` first). Serve serves
``semore.v1.PolicyService`` on ``--grpc-port`` of every node; each policy version is a Serve
application named after the version, so the ``application`` gRPC metadata picks it (with a single
version deployed, Serve routes calls without it). On the Ray that ``connect`` starts, the entry is
Serve's HAProxy ingress (``FAST_PATH``), which sends each call straight to a replica's own gRPC
server; on a cluster named by ``--address``, whichever ingress that cluster was started with. Deploying under a running
version's name is a rolling upgrade: with ``--max-surge-percent`` (100 by default) Serve starts
the new replicas first and stops an old one only when a new one serves, and a stopping replica
finishes the calls it holds, so no call is lost. Serve's imperative API gives every deployment a
new code version, so every ``up`` rolls the version's replicas, a rescale too (``--autoscale``
lets Serve scale without that).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass

import ray
from ray import serve
from ray.serve.config import gRPCOptions

from fleet.config import UpConfig
from fleet.replica import SERVICER_FUNCTION, PolicyReplica
from semore_runtime.policy import OnnxPolicy, file_sha256

DEPLOYMENT = PolicyReplica.name
# Serve's fast data path (Ray >= 2.56): HAProxy takes the gRPC port and routes each call by its
# `application` metadata straight to a replica's own gRPC server, instead of through Serve's
# Python proxy and router. One robot's p50 went from 7.0 ms to 1.0 ms here, against 0.7 ms for
# semore-serve (benchmarks/results/fleet_latency.json). Ray's processes read these when they
# start, so they apply to the Ray that `connect` starts (set either to 0 beforehand to opt out); a
# cluster joined with --address gets them from its own `ray start` environment (docs/fleet.md).
FAST_PATH = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
# Per-request access logs would cost a replica more CPU than a tiny policy's inference.
_LOGGING = {"enable_access_log": False, "log_level": "WARNING"}


class FleetError(RuntimeError):
    """The fleet cannot do what was asked; the message says why (the CLI prints it, exit code 2)."""


@dataclass(frozen=True)
class VersionStatus:
    version: str
    status: str
    replicas: dict[str, int]
    model: str
    model_sha256: str
    provider: str
    ingress: str


def connect(address: str | None) -> str:
    """Joins the Ray cluster at ``address``, or starts Ray here (owned by this process) for None.

    Returns the cluster's address, which other drivers (``up --address``, ``status``) join.
    """
    if address is None:
        for name, value in FAST_PATH.items():
            os.environ.setdefault(name, value)
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    except ConnectionError as exc:
        # Ray sends its cluster token (token auth, on by default for a local Ray) only to a cluster
        # it finds itself (no address, or auto), never to one named by an address.
        raise FleetError(
            f"no Ray cluster at {address}, or it refused this driver ({exc}); a cluster with Ray's "
            "token auth needs RAY_AUTH_MODE=token here and its token in ~/.ray/auth_token or RAY_AUTH_TOKEN"
        ) from None
    return ray.get_runtime_context().gcs_address


def deployment_options(config: UpConfig) -> dict:
    """Serve options of a version's deployment: resources per replica, how many replicas."""
    options: dict = {
        "ray_actor_options": {"num_cpus": config.num_cpus, "num_gpus": config.num_gpus},
        "max_ongoing_requests": config.max_ongoing_requests,
        "max_surge_percent": config.max_surge_percent,
    }
    if config.autoscale is None:
        options["num_replicas"] = config.replicas or 1
    else:
        low, high = config.autoscale
        # A replica counts as busy once it holds a full batch of robots.
        options["autoscaling_config"] = {
            "min_replicas": low,
            "max_replicas": high,
            "target_ongoing_requests": config.max_batch,
        }
    return options


def check_model(config: UpConfig) -> str:
    """Loads the policy file here and returns its SHA-256, which every replica's copy must match.

    A wrong path or a file that is no policy fails now, with OnnxPolicy's message, instead of
    as replicas that keep restarting.
    """
    OnnxPolicy(config.model, device="cpu", threads=1, spinning=False)
    return file_sha256(config.model)


def _free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def deploy(config: UpConfig, model_sha256: str) -> None:
    """Deploys ``config.version`` (or upgrades it to that file); returns once it serves."""
    # Serve's HTTP entry is of no use to the fleet but cannot be turned off alone: a free loopback
    # port keeps it out of the way and unreachable from other machines (HAProxy cannot bind port 0;
    # a Serve already running keeps the port it has).
    serve.start(
        grpc_options=gRPCOptions(port=config.grpc_port, grpc_servicer_functions=[SERVICER_FUNCTION]),
        http_options={"host": "127.0.0.1", "port": _free_loopback_port()},
        logging_config=_LOGGING,
    )
    replica = PolicyReplica.options(**deployment_options(config))
    # The rollout stamp (this machine's clock) tells a replica that a later deployment of its
    # version serves.
    app = replica.bind(config.replica_config(), model_sha256, time.time_ns())
    try:
        serve.run(app, name=config.version, route_prefix=f"/{config.version}", logging_config=_LOGGING)
    except RuntimeError as exc:  # Serve reports a replica that failed to start this way
        raise FleetError(f"version {config.version!r} did not start: {exc}") from None


def status() -> list[VersionStatus]:
    """The fleet's versions (the Serve applications with a policy deployment) and their replicas."""
    rows = []
    for name, app in sorted(serve.status().applications.items()):
        deployment = app.deployments.get(DEPLOYMENT)
        if deployment is None:
            continue
        about = dict.fromkeys(["model", "model_sha256", "provider", "ingress"], "")  # no replica to ask
        if app.status == "RUNNING":
            about = serve.get_app_handle(name).describe.remote().result(timeout_s=30)
        rows.append(
            VersionStatus(
                version=name,
                status=app.status.value,
                replicas=dict(deployment.replica_states),
                model=about["model"],
                model_sha256=about["model_sha256"],
                provider=about["provider"],
                ingress=about["ingress"],
            )
        )
    return rows


def proxies() -> dict[str, str]:
    """Node id -> status of Serve's proxies: the fleet's entry points, one per node with replicas."""
    return {node: proxy.value for node, proxy in serve.status().proxies.items()}


def serving() -> bool:
    """Whether a policy version is deployed: False once ``down`` removed the last one, or Serve."""
    try:
        applications = serve.status().applications.values()
    except ray.exceptions.ActorDiedError:  # another driver shut Serve down: its controller is gone
        return False
    return any(DEPLOYMENT in app.deployments for app in applications)


def down(version: str | None) -> None:
    """Removes one version, or (None) every application and Serve itself."""
    if version is None:
        serve.shutdown()
        return
    running = [row.version for row in status()]
    if version not in running:
        raise FleetError(f"no version {version!r} is deployed (running: {', '.join(running) or 'none'})")
    serve.delete(version)
