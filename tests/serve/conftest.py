"""Fixtures for the serving tests: a real ONNX policy file and real servers on free loopback ports."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from semore_runtime.policy import OnnxPolicy
from semore_runtime.proto_gen.semore.v1 import policy_pb2_grpc
from semore_runtime.spec import PolicySpec

sys.path.insert(0, str(Path(__file__).parent))  # for tiny_policy when run from elsewhere
import serve_helpers  # noqa: E402
from tiny_policy import build_tiny_policy  # noqa: E402

from serve.server import PolicyServer, build_server  # noqa: E402


@pytest.fixture(scope="session")
def policy_path(tmp_path_factory) -> Path:
    """A real exported-policy file: the tiny test policy, or the file named by SEMORE_TEST_POLICY.

    The tests take frame size, K and A from the policy's spec, so any exported policy works.
    """
    if os.environ.get("SEMORE_TEST_POLICY"):
        return Path(os.environ["SEMORE_TEST_POLICY"])
    return build_tiny_policy(tmp_path_factory.mktemp("policy") / "tiny_policy.onnx")


@pytest.fixture(scope="session")
def local_policy(policy_path) -> OnnxPolicy:
    """The same policy in-process: the reference the served actions must match."""
    return OnnxPolicy(policy_path, device="cpu", threads=1, spinning=False)


@pytest.fixture(scope="session")
def spec(local_policy) -> PolicySpec:
    """The served policy's spec: tests take sizes, K and A from it, never from literals."""
    return local_policy.spec


@pytest.fixture(scope="session", autouse=True)
def _frames_follow_the_policy(spec) -> None:
    serve_helpers.FRAME_HW[:] = [spec.height, spec.width]


@pytest.fixture
def start_server(policy_path) -> Iterator[Callable[..., PolicyServer]]:
    """Factory: ``start_server(**ServeConfig overrides)`` -> a started server on a free port."""
    servers: list[PolicyServer] = []

    def start(**overrides) -> PolicyServer:
        overrides.setdefault("model", policy_path)
        overrides.setdefault("port", 0)
        overrides.setdefault("device", "cpu")
        overrides.setdefault("threads", 1)
        server = build_server(**overrides)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop(grace=0)


@pytest.fixture
def server(start_server) -> PolicyServer:
    return start_server()


@pytest.fixture
def stub(server) -> Iterator[policy_pb2_grpc.PolicyServiceStub]:
    with grpc.insecure_channel(server.address) as channel:
        yield policy_pb2_grpc.PolicyServiceStub(channel)
