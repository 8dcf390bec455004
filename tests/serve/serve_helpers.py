"""Helpers shared by the serving tests and tests/semore_runtime/test_client.py (not fixtures)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from semore_runtime.frame_stack import FrameStack
from semore_runtime.policy import OnnxPolicy
from semore_runtime.proto_gen.semore.v1 import policy_pb2


def raw_frame(frame: np.ndarray) -> policy_pb2.Frame:
    h, w = frame.shape[:2]
    return policy_pb2.Frame(data=frame.tobytes(), height=h, width=w, encoding=policy_pb2.Frame.RAW_RGB8)


# The served policy's frame size; conftest sets it from the policy under test, so the tests follow
# a swapped-in policy file (the tiny test policy is 32x32).
FRAME_HW = [32, 32]


def random_frames(n: int, seed: int, height: int | None = None, width: int | None = None) -> np.ndarray:
    """n random uint8 RGB frames, by default of the served policy's size."""
    h, w = height or FRAME_HW[0], width or FRAME_HW[1]
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


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
