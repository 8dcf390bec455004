"""Fixtures for the serving tests: a real ONNX policy file and real servers on free loopback ports."""

from __future__ import annotations

import functools
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from devkit import tiny_policy
from semore_runtime.policy import OnnxPolicy, file_sha256
from semore_runtime.proto_gen.semore.v1 import policy_pb2_grpc
from semore_runtime.spec import PolicySpec
from serve.core import PolicyCore
from serve.server import PolicyServer, ServeConfig
from tests.helpers import serving


@pytest.fixture(scope="session")
def policy_path(tmp_path_factory) -> Path:
    """A real exported-policy file: the tiny test policy, or the file named by SEMORE_TEST_POLICY.

    The tests take frame size, K and A from the policy's spec, so any exported policy works.
    """
    if os.environ.get("SEMORE_TEST_POLICY"):
        return Path(os.environ["SEMORE_TEST_POLICY"])
    return tiny_policy.build_tiny_policy(tmp_path_factory.mktemp("policy") / "tiny_policy.onnx")


@pytest.fixture(scope="session")
def local_policy(policy_path) -> OnnxPolicy:
    """The same policy in-process: the reference the served actions must match."""
    return OnnxPolicy(policy_path, device="cpu", threads=1, spinning=False)


@pytest.fixture(scope="session")
def spec(local_policy) -> PolicySpec:
    """The served policy's spec: tests take sizes, K and A from it, never from literals."""
    return local_policy.spec


@pytest.fixture(scope="session")
def random_frames(spec) -> Callable[..., np.ndarray]:
    """``random_frames(n, seed)``: n random frames of the served policy's size (height=, width= override)."""
    return functools.partial(serving.random_frames, height=spec.height, width=spec.width)


@pytest.fixture(scope="session")
def poisoned_policy(tmp_path_factory) -> Callable[[tiny_policy.Poison], Path]:
    """``poisoned_policy(poison)``: the tiny policy (32x32, K=3, 2 actions in [-1, 1]) misbehaving on
    a stack whose newest frame is all white: NaN, +inf or 1e6 actions, or a model call that raises.

    Always the tiny policy, whatever SEMORE_TEST_POLICY says: feed it ``serving.random_frames``.
    """
    folder = tmp_path_factory.mktemp("poisoned")
    return functools.cache(
        lambda poison: tiny_policy.build_tiny_policy(folder / f"{poison}.onnx", poison=poison)
    )


@pytest.fixture
def start_server(policy_path) -> Iterator[Callable[..., PolicyServer]]:
    """Factory: ``start_server(**ServeConfig overrides)`` -> a started server on a free port."""
    yield from serving.serve_for_tests(policy_path)


@pytest.fixture
def start_cli_server(policy_path, tmp_path) -> Iterator[Callable[..., tuple[subprocess.Popen, str]]]:
    """Factory: ``start_cli_server(*flags)`` -> (process, address) of a ``python -m serve`` subprocess.

    Its log goes to tmp_path; every process it started is killed when the fixture ends.
    """
    procs: list[subprocess.Popen] = []

    def start(*flags: str) -> tuple[subprocess.Popen, str]:
        proc, address = serving.start_cli(policy_path, tmp_path / f"server-{len(procs)}.log", *flags)
        procs.append(proc)
        return proc, address

    yield start
    for proc in procs:
        proc.kill()
        proc.wait(10)


@pytest.fixture
def server(start_server) -> PolicyServer:
    return start_server()


@pytest.fixture
def stub(server) -> Iterator[policy_pb2_grpc.PolicyServiceStub]:
    with grpc.insecure_channel(server.address) as channel:
        yield policy_pb2_grpc.PolicyServiceStub(channel)


@pytest.fixture
def make_core(policy_path) -> Iterator[Callable[..., PolicyCore]]:
    """Factory: ``make_core(model=path, **PolicyCore settings)`` -> a started, warmed-up core, no network.

    Settings default to semore-serve's; every core it made is closed when the fixture ends.
    """
    cores: list[PolicyCore] = []

    def make(model: Path = policy_path, **overrides) -> PolicyCore:
        policy = OnnxPolicy(model, device="cpu", threads=1, spinning=False)
        settings = ServeConfig(model=model).core_settings() | overrides
        core = PolicyCore(policy, model_sha256=file_sha256(model), **settings)
        cores.append(core)
        core.start()
        core.warm_up()
        return core

    yield make
    for core in cores:
        core.close()
