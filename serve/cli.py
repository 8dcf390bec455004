"""``semore-serve``: serve an exported policy over gRPC until SIGTERM/SIGINT, then drain and exit 0."""

from __future__ import annotations

import argparse
import contextlib
import logging
import select
import signal
import socket
import sys
import threading

from semore_runtime.options import add_options, parse
from semore_runtime.policy import DeviceUnavailableError, PolicyLoadError
from serve.logs import configure_logging
from serve.server import ServeConfig, build_server

log = logging.getLogger("serve")


def parse_args(argv: list[str] | None = None) -> tuple[ServeConfig, argparse.Namespace]:
    """The server's config and the logging options; a bad value exits 2 naming its option."""
    p = argparse.ArgumentParser(
        prog="semore-serve",
        description="Serve an exported Semore policy (ONNX) over gRPC with per-stream frame stacks "
        "and dynamic micro-batching.",
    )
    add_options(p, ServeConfig)
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--plain-logs", action="store_true", help="human-readable logs instead of JSON lines")
    args = vars(p.parse_args(argv))
    logging_options = argparse.Namespace(log_level=args.pop("log_level"), plain_logs=args.pop("plain_logs"))
    return parse(p, ServeConfig, args), logging_options


def main(argv: list[str] | None = None) -> int:
    config, args = parse_args(argv)
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
        server = build_server(config)
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
