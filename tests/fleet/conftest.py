"""Fixtures for the fleet tests: one real local fleet for the whole session, put up as a user does.

``semore-fleet up`` runs in the foreground (Ray started on this machine, owned by that process)
with version v1; tests that need more versions deploy them with ``semore-fleet up --address``.
Every test here is marked ``ray``: ``pytest -m "not ray"`` skips them (Ray takes ~20 s to start).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devkit.fleet import LocalFleet, free_port, run_fleet, start_local_fleet
from devkit.tiny_policy import build_tiny_policy
from semore_runtime.client import PolicyClient
from semore_runtime.policy import OnnxPolicy

try:
    import ray.serve  # noqa: F401
except ImportError:  # no fleet extra: nothing here can run (pip install 'semore[fleet]')
    collect_ignore_glob = ["test_*.py"]

TOKEN = "fleet-test-token"
# Small CPU shares: a rolling upgrade runs old and new replicas side by side on a 2-core machine.
REPLICA_CPUS = "0.25"


@pytest.fixture(scope="session")
def fleet_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fleet")


@pytest.fixture(scope="session")
def policies(fleet_dir) -> dict[str, Path]:
    """Three different tiny policies of the same shape: v1, v2 and an upgrade's new file."""
    return {
        name: build_tiny_policy(fleet_dir / f"{name}.onnx", seed=seed)
        for seed, name in enumerate(["v1", "v2", "v3"])
    }


@pytest.fixture(scope="session")
def local(policies) -> dict[str, OnnxPolicy]:
    """The same files in-process: the reference the fleet's actions must match."""
    return {
        name: OnnxPolicy(path, device="cpu", threads=1, spinning=False) for name, path in policies.items()
    }


@pytest.fixture(scope="session")
def token_file(fleet_dir) -> Path:
    path = fleet_dir / "tokens.txt"
    path.write_text(f"# accepted tokens\n{TOKEN}\n")
    return path


@pytest.fixture(scope="session")
def fleet(fleet_dir, policies, token_file) -> Iterator[LocalFleet]:
    """``semore-fleet up`` in the foreground with version v1; stopped (SIGTERM, exit 0) at the end."""
    fleet = start_local_fleet(
        fleet_dir / "fleet.log",
        "--model", str(policies["v1"]), "--version", "v1", "--grpc-port", str(free_port()),
        "--num-cpus", REPLICA_CPUS, "--token-file", str(token_file),
    )  # fmt: skip
    yield fleet
    assert fleet.stop() == 0, fleet.log.read_text()[-3000:]


@pytest.fixture(scope="session")
def deploy(fleet, token_file) -> Callable[..., None]:
    """``deploy(version, model, *options)``: ``semore-fleet up --address`` onto the session's fleet."""

    def up(version: str, model: Path, *options: str) -> None:
        result = run_fleet(
            "up", "--address", fleet.ray_address, "--model", str(model), "--version", version,
            "--num-cpus", REPLICA_CPUS, "--token-file", str(token_file), *options,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]

    return up


@pytest.fixture(scope="session")
def token() -> str:
    return TOKEN


@pytest.fixture(scope="session")
def v1_metadata() -> tuple[tuple[str, str], ...]:
    """What PolicyClient(token=..., version="v1") sends, for tests that call the stub directly."""
    return (("authorization", f"Bearer {TOKEN}"), ("application", "v1"))


@pytest.fixture
def client(fleet) -> Iterator[PolicyClient]:
    """A robot's client for version v1, with the token."""
    with PolicyClient(fleet.target, token=TOKEN, version="v1") as client:
        yield client
