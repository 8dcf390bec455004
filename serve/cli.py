"""``semore-serve``: serve an exported policy over gRPC until SIGTERM/SIGINT, then drain and exit 0."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import select
import signal
import socket
import sys
import threading
import types
import typing

from semore_runtime.policy import DeviceUnavailableError, PolicyLoadError
from serve.logs import configure_logging
from serve.server import ServeConfig, build_server

log = logging.getLogger("serve")


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """Adds one option per ServeConfig field; its name, default, help and choices come from the field."""
    hints = typing.get_type_hints(ServeConfig)
    for f in dataclasses.fields(ServeConfig):
        flag = f.metadata.get("flag", "--" + f.name.replace("_", "-"))
        options: dict = {"dest": f.name, "help": f.metadata.get("help")}
        if f.default is dataclasses.MISSING:
            options["required"] = True
        else:
            options["default"] = f.default
        kind = hints[f.name]
        if kind is bool:  # a flag: giving it flips the default
            options["action"] = "store_false" if f.default else "store_true"
        else:
            if isinstance(kind, types.UnionType):  # X | None: an option that may be left out
                (kind,) = (t for t in typing.get_args(kind) if t is not type(None))
            if typing.get_origin(kind) is typing.Literal:
                options["choices"] = list(typing.get_args(kind))
            else:
                options["type"] = kind
                options["metavar"] = flag.removeprefix("--").replace("-", "_").upper()
        parser.add_argument(flag, **options)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="semore-serve",
        description="Serve an exported Semore policy (ONNX) over gRPC with per-stream frame stacks "
        "and dynamic micro-batching.",
    )
    add_config_options(p)
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--plain-logs", action="store_true", help="human-readable logs instead of JSON lines")
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    return ServeConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(ServeConfig)})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_level, json_lines=not args.plain_logs)
    signals: list[int] = []  # SIGTERM / SIGINT: stop
    hangups: list[int] = []  # SIGHUP: re-read the token file

    def on_signal(signum, _frame) -> None:
        # Only record: the main loop below does the work.
        (hangups if signum == signal.SIGHUP else signals).append(signum)

    # A signal may land on any thread (grpc's, ONNX Runtime's); the wakeup fd wakes the main
    # thread's select() at once instead of at its next timeout.
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)

    def wait_for_signal(count: int, timeout: float) -> bool:
        """True once ``count`` signals arrived; waits at most ``timeout`` seconds."""
        if len(signals) < count:
            select.select([wake_r], [], [], timeout)
            with contextlib.suppress(BlockingIOError):
                wake_r.recv(64)
        return len(signals) >= count

    try:
        server = build_server(config_from_args(args))
    except (FileNotFoundError, PolicyLoadError, DeviceUnavailableError, ValueError, OSError) as exc:
        log.error("cannot start: %s", exc, extra={"event": "startup_failed"})
        return 2

    server.start()
    # Tests and scripts wait for this line on stdout instead of polling the port.
    print(f"SERVING {server.address}", flush=True)
    while not wait_for_signal(1, 1.0):
        if hangups:
            hangups.clear()
            server.reload_tokens()
    log.info("signal %s: shutting down", signals[0], extra={"event": "signal", "signal": signals[0]})
    drain = threading.Thread(target=server.stop, name="semore-drain", daemon=True)
    drain.start()
    forced = False
    while drain.is_alive():
        if wait_for_signal(2, 0.05) and not forced:
            forced = True  # a second signal: stop waiting for open streams
            log.warning("second signal: cancelling open streams", extra={"event": "forced_stop"})
            server.force_stop()
        drain.join(0.01)
    return 0


if __name__ == "__main__":
    sys.exit(main())
