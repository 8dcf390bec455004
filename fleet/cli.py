"""``semore-fleet``: put policy versions up on Ray Serve, see what runs, take them down.

    semore-fleet up --model policy.onnx [--version v1] [--replicas N | --autoscale MIN:MAX]
                    [--address ADDR] [--grpc-port 9000] [--token-file tokens.txt] ...
    semore-fleet status [--address ADDR]
    semore-fleet down [--version v1] [--address ADDR]

Without ``--address``, ``up`` starts Ray on this machine and stays in the foreground (like
semore-serve) until SIGINT/SIGTERM, or until ``down`` removes the fleet; it prints
``SERVING 127.0.0.1:PORT ray=ADDRESS`` once the version serves, and other commands on this
machine join that Ray with ``--address auto`` (the default of status and down; ``--address
ADDRESS`` needs RAY_AUTH_MODE=token, see fleet.control.connect). With ``--address``, ``up``
deploys onto that cluster and returns.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable

import ray
from pydantic import BaseModel
from ray import serve

from fleet.config import DownConfig, StatusConfig, UpConfig
from fleet.control import FleetError, check_model, connect, deploy, down, proxies, serving, status
from semore_runtime.options import add_options, parse
from semore_runtime.policy import DeviceUnavailableError, PolicyLoadError


def _up(config: UpConfig) -> int:
    model_sha256 = check_model(config)
    if config.address is not None:
        address = connect(config.address)
        deploy(config, model_sha256)
        print(f"version {config.version!r} serves on the Ray cluster at {address}")
        return 0
    address = connect(None)
    # After ray.init, which installs a SIGTERM handler that aborts the process.
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _signum, _frame: stop.set())
    try:
        deploy(config, model_sha256)
        # Tests and scripts wait for this line instead of polling the port.
        print(f"SERVING 127.0.0.1:{config.grpc_port} ray={address}", flush=True)
        while not stop.wait(1.0) and serving():
            pass
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0


def _status(config: StatusConfig) -> int:
    connect(config.address)
    rows = status()
    if not rows:
        print("no policy version is deployed")
    for row in rows:
        replicas = ", ".join(f"{state.lower()} {n}" for state, n in sorted(row.replicas.items()))
        print(f"{row.version}: {row.status}, replicas: {replicas or 'none'}")
        if row.model:
            print(
                f"  model {row.model} (sha256 {row.model_sha256[:12]}) on {row.provider}, ingress {row.ingress}"
            )
    entries = proxies()
    healthy = sum(state == "HEALTHY" for state in entries.values())
    print(f"gRPC proxies: {healthy} of {len(entries)} healthy (one per node with replicas)")
    return 0


def _down(config: DownConfig) -> int:
    connect(config.address)
    down(config.version)
    print(
        f"removed version {config.version!r}" if config.version else "removed the fleet (Serve is shut down)"
    )
    return 0


VERBS: dict[str, tuple[type[BaseModel], Callable[..., int]]] = {
    "up": (UpConfig, _up),
    "status": (StatusConfig, _status),
    "down": (DownConfig, _down),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="semore-fleet",
        description="Serve Semore policies on a Ray Serve cluster (semore.v1.PolicyService).",
    )
    verbs = parser.add_subparsers(dest="verb", required=True)
    for verb, (model, _run) in VERBS.items():
        doc = model.__doc__.splitlines()[0]
        add_options(verbs.add_parser(verb, help=doc, description=doc), model)
    options = vars(parser.parse_args(argv))
    model, run = VERBS[options.pop("verb")]
    config = parse(parser, model, options)
    try:
        return run(config)
    except (FleetError, FileNotFoundError, PolicyLoadError, DeviceUnavailableError) as exc:
        print(f"semore-fleet: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
