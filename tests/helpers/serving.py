"""Serving-side helpers for tests: frames, expected actions, test servers and certificates (plain
functions, no fixtures). The tiny test policy itself is devkit.tiny_policy."""

from __future__ import annotations

import functools
import io
import os
import queue
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from devkit.tiny_policy import TINY_HW
from semore_runtime.frame_stack import FrameStack
from semore_runtime.policy import OnnxPolicy
from semore_runtime.proto_gen.semore.v1 import policy_pb2, policy_pb2_grpc
from serve.server import PolicyServer, build_server

ROOT = Path(__file__).resolve().parents[2]


def serve_for_tests(policy_path: Path) -> Iterator[Callable[..., PolicyServer]]:
    """For a fixture to ``yield from``: ``start(**ServeConfig overrides)`` -> a started server.

    Free loopback port, CPU, one ONNX Runtime thread unless overridden; every server it started
    is stopped when the fixture ends.
    """
    servers: list[PolicyServer] = []

    def start(**overrides) -> PolicyServer:
        overrides = {"model": policy_path, "port": 0, "device": "cpu", "threads": 1, **overrides}
        server = build_server(**overrides)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop(grace=0)


def start_cli(policy_path: Path, log_path: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    """``python -m serve`` on a free port (CPU) in a subprocess: (process, address) once it is SERVING."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log_file = log_path.open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "serve",
            "--model",
            str(policy_path),
            "--port",
            "0",
            "--device",
            "cpu",
            *extra,
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=log_file,
        text=True,
    )
    line = proc.stdout.readline()  # "SERVING host:port" once warmed up
    if not line.startswith("SERVING "):
        proc.kill()
        raise AssertionError(f"server did not start: {line!r}\n{log_path.read_text()}")
    return proc, line.split()[1]


class StreamDriver:
    """A raw StreamAct call whose requests the test feeds one at a time."""

    def __init__(self, stub: policy_pb2_grpc.PolicyServiceStub, metadata=None) -> None:
        self.requests: queue.SimpleQueue = queue.SimpleQueue()
        self.call = stub.StreamAct(iter(self.requests.get, None), metadata=metadata)

    def step(self, obs: policy_pb2.Observation, timeout: float = 10.0) -> policy_pb2.Action:
        self.requests.put(obs)
        return next(self.call)

    def close(self) -> None:
        self.requests.put(None)


def wait_until(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def encoded(frame: np.ndarray, fmt: str, **kwargs) -> bytes:
    """``frame`` (uint8, [H, W, 3] or [H, W]) as a JPEG or PNG file; kwargs go to Pillow's save."""
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data and the CRC of type + data."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@functools.cache
def png_bomb(height: int = 4096, width: int = 4096) -> bytes:
    """A PNG that declares height x width RGBA16 (8 bytes a pixel) and really holds that image.

    A valid IHDR and one IDAT of the zlib-compressed all-zero image: 4096x4096 is 128 MiB of
    pixels in a ~130 KB file (building it takes ~1 s, hence the cache).
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 6, 0, 0, 0)  # 16-bit, colour type 6 (RGBA)
    idat = zlib.compress(bytes((1 + width * 8) * height), 9)  # each row: filter byte + 8 bytes/pixel
    signature = b"\x89PNG\r\n\x1a\n"
    return signature + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def raw_frame(frame: np.ndarray) -> policy_pb2.Frame:
    h, w = frame.shape[:2]
    return policy_pb2.Frame(data=frame.tobytes(), height=h, width=w, encoding=policy_pb2.Frame.RAW_RGB8)


def random_frames(n: int, seed: int, height: int = TINY_HW[0], width: int = TINY_HW[1]) -> np.ndarray:
    """n random uint8 RGB frames, by default of the tiny test policy's size.

    tests/serve's ``random_frames`` fixture gives them the size of the policy under test.
    """
    return np.random.default_rng(seed).integers(0, 256, (n, height, width, 3), dtype=np.uint8)


def expected_actions(
    policy: OnnxPolicy, frames: np.ndarray, resets: set[int] | frozenset = frozenset()
) -> np.ndarray:
    """What a stream must answer: OnnxPolicy on the stacks FrameStack builds (reset before ``resets``)."""
    stack = FrameStack(policy.spec.frame_stack, policy.spec.frame_shape)
    stacks = []
    for i, frame in enumerate(frames):
        if i in resets:
            stack.reset()
        stacks.append(stack.push(frame))
    return policy.act(np.stack(stacks))


def make_self_signed(folder: Path) -> tuple[Path, Path]:
    """A self-signed server certificate (and key) for 127.0.0.1 and localhost, via the openssl CLI."""
    folder.mkdir(parents=True, exist_ok=True)
    key, cert = folder / "self.key", folder / "self.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def make_certs(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, all signed by the CA.

    Uses the openssl CLI (the ``cryptography`` package is not installed here).
    """
    folder.mkdir(parents=True, exist_ok=True)
    p = {
        name: folder / name
        for name in ("ca.key", "ca.pem", "server.key", "server.pem", "client.key", "client.pem")
    }
    ext = folder / "san.ext"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=semore-test-ca",
        "-keyout", str(p["ca.key"]), "-out", str(p["ca.pem"]))  # fmt: skip
    for who in ("server", "client"):
        csr = folder / f"{who}.csr"
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN=semore-test-{who}",
            "-keyout", str(p[f"{who}.key"]), "-out", str(csr))  # fmt: skip
        run("x509", "-req", "-in", str(csr), "-CA", str(p["ca.pem"]), "-CAkey", str(p["ca.key"]),
            "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(p[f"{who}.pem"]))  # fmt: skip
    return p
