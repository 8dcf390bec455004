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
from pathlib import Path

from semore_runtime.policy import DeviceUnavailableError, PolicyLoadError
from serve.logs import configure_logging
from serve.server import ServeConfig, build_server

log = logging.getLogger("serve")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="semore-serve",
        description="Serve an exported Semore policy (ONNX) over gRPC with per-stream frame stacks "
        "and dynamic micro-batching.",
    )
    p.add_argument("--model", type=Path, required=True, help="exported policy .onnx file")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default loopback; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=50051, help="gRPC port (0 picks a free one)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--max-batch", type=int, default=32, help="most requests per model call")
    p.add_argument(
        "--batch-wait-us",
        type=int,
        default=500,
        help="longest wait for more requests to join a batch (only while other streams are open)",
    )
    p.add_argument(
        "--max-streams", type=int, default=256, help="concurrent StreamAct limit (RESOURCE_EXHAUSTED beyond)"
    )
    p.add_argument(
        "--resize", action="store_true", help="resize frames of another size instead of rejecting them"
    )
    p.add_argument("--tls-cert", type=Path, help="server certificate chain (PEM); enables TLS")
    p.add_argument("--tls-key", type=Path, help="server private key (PEM)")
    p.add_argument("--client-ca", type=Path, help="CA bundle (PEM) for client certificates: mutual TLS")
    p.add_argument("--token-file", type=Path, help="accepted bearer tokens, one per line: auth on")
    p.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port (same host)")
    p.add_argument(
        "--max-message-bytes", type=int, help="per-message size limit (default 4 MiB or K raw frames)"
    )
    p.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads")
    p.add_argument("--spin", action="store_true", help="let ONNX Runtime threads spin (faster on idle cores)")
    p.add_argument("--drain-timeout", type=float, default=10.0, help="seconds open streams get after SIGTERM")
    p.add_argument(
        "--no-inline",
        action="store_true",
        help="always go through the batcher thread, even for a lone stream (for comparisons)",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--plain-logs", action="store_true", help="human-readable logs instead of JSON lines")
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    return ServeConfig(
        model=args.model,
        host=args.host,
        port=args.port,
        device=args.device,
        max_batch=args.max_batch,
        batch_wait_us=args.batch_wait_us,
        max_streams=args.max_streams,
        resize=args.resize,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        client_ca=args.client_ca,
        token_file=args.token_file,
        metrics_port=args.metrics_port,
        max_message_bytes=args.max_message_bytes,
        threads=args.threads,
        spinning=args.spin,
        drain_timeout_s=args.drain_timeout,
        inline_when_alone=not args.no_inline,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_level, json_lines=not args.plain_logs)
    signals: list[int] = []

    def on_signal(signum, _frame) -> None:
        signals.append(signum)  # only record: the main loop below does the work

    # A signal may land on any thread (grpc's, ONNX Runtime's); the wakeup fd wakes the main
    # thread's select() at once instead of at its next timeout.
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
    for sig in (signal.SIGTERM, signal.SIGINT):
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
        pass
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
