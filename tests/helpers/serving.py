"""Serving-side helpers for tests and the serving benchmark: the tiny test policy, frames,
expected actions, test servers and certificates (plain functions, no fixtures)."""

from __future__ import annotations

import functools
import io
import json
import os
import queue
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from semore_runtime.frame_stack import FrameStack
from semore_runtime.policy import OnnxPolicy
from semore_runtime.proto_gen.semore.v1 import policy_pb2, policy_pb2_grpc
from semore_runtime.spec import SPEC_METADATA_KEY, PolicySpec
from serve.server import PolicyServer, build_server

OPSET = 17
TINY_HW = (32, 32)  # the tiny test policy's frame size (height, width)
WHITE = 255  # a poisoned policy misbehaves on a stack whose newest frame is all this value
# What a poisoned policy does on such a stack: that action becomes NaN, +inf or 1e6 (bounds are
# [-1, 1]), or the whole model call raises.
Poison = Literal["nan", "inf", "1e6", "raise"]
ROOT = Path(__file__).resolve().parents[2]


def build_tiny_policy(
    path: str | os.PathLike,
    height: int = TINY_HW[0],
    width: int = TINY_HW[1],
    frame_stack: int = 3,
    action_dim: int = 2,
    seed: int = 0,
    *,
    poison: Poison | None = None,
    poison_pixel: int = WHITE,
    spec_overrides: dict | None = None,
    input_type: int = TensorProto.UINT8,
    batch_dim: str | int = "batch",
) -> Path:
    """Writes a tiny but real Semore policy file to ``path`` and returns it.

    The graph has the exported policy's contract (uint8 frames [B, K, H, W, 3] -> float32 actions
    [B, A] in the spec's bounds, PolicySpec JSON in the metadata) and every output depends on every
    pixel of every frame, so a test that compares served actions with local ones catches a wrong
    frame order, a missed reset or a mixed-up stream.

    frames -> Cast float -> /255 - 0.5 -> flatten [B, K*H*W*3] -> MatMul (seeded weights) ->
    + per-frame mean features (ReduceMean over H, W, MatMul) -> Tanh -> scaled into the bounds.

    Broken files, for the tests that the runtime refuses or contains them: ``poison`` makes the
    graph misbehave on a stack whose newest frame is all ``poison_pixel`` (white by default, so
    the all-black warm-up passes and only that input fails); ``spec_overrides`` replaces fields
    of the stored spec JSON as is, unvalidated, so the spec can disagree with the graph or break
    its own rules; ``input_type`` and ``batch_dim`` change the graph's declared input.
    """
    path = Path(path)
    rng = np.random.default_rng(seed)
    n_pixels = frame_stack * height * width * 3
    # Scaled so a random frame gives pre-activations of order 1: actions spread over the range.
    w_pix = (rng.standard_normal((n_pixels, action_dim)) * (3.0 / np.sqrt(n_pixels))).astype(np.float32)
    w_mean = (rng.standard_normal((frame_stack * 3, action_dim)) * 2.0).astype(np.float32)
    low = np.full(action_dim, -1.0, dtype=np.float32)
    high = np.full(action_dim, 1.0, dtype=np.float32)

    spec = PolicySpec(
        height=height,
        width=width,
        frame_stack=frame_stack,
        action_dim=action_dim,
        action_low=low.tolist(),
        action_high=high.tolist(),
        env_id="test:tiny",
        encoder_kind="pixel",
        teacher_kind="none",
        training_frames=0,
    )

    inits = [
        numpy_helper.from_array(np.array(1.0 / 255.0, dtype=np.float32), "inv255"),
        numpy_helper.from_array(np.array(0.5, dtype=np.float32), "half"),
        numpy_helper.from_array(np.array([0, n_pixels], dtype=np.int64), "flat_shape"),
        numpy_helper.from_array(np.array([0, frame_stack * 3], dtype=np.int64), "mean_shape"),
        numpy_helper.from_array(w_pix, "w_pix"),
        numpy_helper.from_array(w_mean, "w_mean"),
        numpy_helper.from_array(((high - low) / 2).astype(np.float32), "scale"),
        numpy_helper.from_array(((high + low) / 2).astype(np.float32), "shift"),
    ]
    nodes = [
        helper.make_node("Cast", ["frames"], ["x_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["x_f", "inv255"], ["x_unit"]),
        helper.make_node("Sub", ["x_unit", "half"], ["x"]),
        helper.make_node("Reshape", ["x", "flat_shape"], ["x_flat"]),
        helper.make_node("MatMul", ["x_flat", "w_pix"], ["h_pix"]),
        helper.make_node("ReduceMean", ["x"], ["x_mean"], axes=[2, 3], keepdims=0),  # [B, K, 3]
        helper.make_node("Reshape", ["x_mean", "mean_shape"], ["x_mean_flat"]),
        helper.make_node("MatMul", ["x_mean_flat", "w_mean"], ["h_mean"]),
        helper.make_node("Add", ["h_pix", "h_mean"], ["h"]),
        helper.make_node("Tanh", ["h"], ["t"]),
        helper.make_node("Mul", ["t", "scale"], ["t_scaled"]),
        helper.make_node("Add", ["t_scaled", "shift"], ["clean" if poison else spec.output_name]),
    ]
    if poison:
        poison_inits, poison_nodes = _poison_nodes(
            poison, poison_pixel, frame_stack, action_dim, spec.output_name
        )
        inits += poison_inits
        nodes += poison_nodes
    graph = helper.make_graph(
        nodes,
        "semore_tiny_policy",
        [
            helper.make_tensor_value_info(
                spec.input_name, input_type, [batch_dim, frame_stack, height, width, 3]
            )
        ],
        [helper.make_tensor_value_info(spec.output_name, TensorProto.FLOAT, [batch_dim, action_dim])],
        initializer=inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="semore-tests"
    )
    model.ir_version = 8  # readable by every onnxruntime >= 1.14
    spec_json = json.dumps(json.loads(spec.model_dump_json()) | (spec_overrides or {}))
    helper.set_model_props(model, {SPEC_METADATA_KEY: spec_json})
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _poison_nodes(
    poison: Poison, pixel: int, frame_stack: int, action_dim: int, output: str
) -> tuple[list, list]:
    """Initializers and nodes that turn ``clean`` [B, A] into ``output``, poisoned where the newest
    frame of a stack is all ``pixel``."""
    inits = [
        numpy_helper.from_array(np.array([frame_stack - 1], dtype=np.int64), "newest_start"),
        numpy_helper.from_array(np.array([frame_stack], dtype=np.int64), "newest_end"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "stack_axis"),
        numpy_helper.from_array(np.array(pixel / 255.0 - 0.5, dtype=np.float32), "poison_level"),
        numpy_helper.from_array(np.array(0.5 / 255.0, dtype=np.float32), "half_step"),
    ]
    nodes = [  # hit [B, 1]: every value of the newest frame is within half a step of the level
        helper.make_node("Slice", ["x", "newest_start", "newest_end", "stack_axis"], ["newest"]),
        helper.make_node("Sub", ["newest", "poison_level"], ["off"]),
        helper.make_node("Abs", ["off"], ["dist"]),
        helper.make_node("ReduceMax", ["dist"], ["max_dist"], axes=[2, 3, 4], keepdims=0),  # [B, 1]
        helper.make_node("Less", ["max_dist", "half_step"], ["hit"]),
    ]
    if poison != "raise":
        value = {"nan": np.nan, "inf": np.inf, "1e6": 1e6}[poison]
        inits.append(numpy_helper.from_array(np.array(value, dtype=np.float32), "poison_value"))
        nodes.append(helper.make_node("Where", ["hit", "poison_value", "clean"], [output]))
        return inits, nodes
    # Gather columns 0..A-1, shifted out of range when any stack of the call is hit: ONNX Runtime raises.
    inits += [
        numpy_helper.from_array(np.arange(action_dim, dtype=np.int64), "columns"),
        numpy_helper.from_array(np.array(1000, dtype=np.int64), "out_of_range"),
    ]
    nodes += [
        helper.make_node("Cast", ["hit"], ["hit_int"], to=TensorProto.INT64),
        helper.make_node("ReduceMax", ["hit_int"], ["any_hit"], axes=[0, 1], keepdims=0),  # []
        helper.make_node("Mul", ["any_hit", "out_of_range"], ["column_shift"]),
        helper.make_node("Add", ["columns", "column_shift"], ["picked"]),
        helper.make_node("Gather", ["clean", "picked"], [output], axis=1),
    ]
    return inits, nodes


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
