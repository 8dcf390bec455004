"""Policy versions on the fleet: two side by side, picked per call by gRPC metadata; a rolling
upgrade to a new file under load, with no call lost; status and down. Against a real local Ray
Serve (the session's ``fleet``), driven with the ``semore-fleet`` command as a user drives it."""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest

from devkit.fleet import run_fleet
from semore_runtime.client import PolicyClient, PolicyServerError
from semore_runtime.policy import file_sha256
from tests.helpers.serving import expected_actions, random_frames

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def two_versions(deploy, policies) -> None:
    deploy("v2", policies["v2"])


def test_two_versions_answer_by_metadata(fleet, two_versions, local, token):
    frames = random_frames(local["v1"].spec.frame_stack, seed=9)
    assert not np.allclose(local["v1"].act(frames), local["v2"].act(frames))
    for version in ("v1", "v2"):
        with PolicyClient(fleet.target, token=token, version=version) as client:
            assert client.served_version() == version
            np.testing.assert_allclose(client.act(frames), local[version].act(frames), atol=1e-5)
            with client.session() as session:
                streamed = np.stack([session.step(frame) for frame in frames])
            np.testing.assert_allclose(streamed, expected_actions(local[version], frames), atol=1e-5)
    # With two versions up, a call that names none cannot be routed.
    with (
        PolicyClient(fleet.target, token=token, retries=0) as client,
        pytest.raises(PolicyServerError) as refused,
    ):
        client.act(frames)
    assert refused.value.code == grpc.StatusCode.NOT_FOUND


def test_a_version_that_is_not_deployed_is_not_found(fleet, local, token):
    """Refused by the ingress with several versions up, by the replica with one (which the ingress
    then routes every call to, whatever version it names)."""
    frames = random_frames(local["v1"].spec.frame_stack, seed=12)
    with (
        PolicyClient(fleet.target, token=token, version="v9", retries=0) as client,
        pytest.raises(PolicyServerError, match="'v9'") as refused,
    ):
        client.act(frames)
    assert refused.value.code == grpc.StatusCode.NOT_FOUND


def _wait_for(condition, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_rolling_upgrade_loses_no_request(fleet, deploy, policies, local, token):
    """Act calls and a StreamAct session run through an upgrade from one file to another."""
    deploy("rolling", policies["v1"])
    k = local["v1"].spec.frame_stack
    frames = random_frames(k, seed=10)
    old, new = local["v1"].act(frames), local["v3"].act(frames)
    acted: list[np.ndarray] = []
    streamed: list[np.ndarray] = []
    failures: list[Exception] = []
    reconnects: list[int] = []
    stop = threading.Event()

    def act_calls() -> None:
        with PolicyClient(fleet.target, token=token, version="rolling") as client:
            while not stop.is_set():
                try:
                    acted.append(client.act(frames))
                except PolicyServerError as exc:
                    failures.append(exc)

    def stream() -> None:
        # Cycles through `frames`: its stacks are those of one long unbroken stream.
        with (
            PolicyClient(fleet.target, token=token, version="rolling") as client,
            client.session() as session,
        ):
            while not stop.is_set():
                try:
                    streamed.append(session.step(frames[len(streamed) % k]))
                except PolicyServerError as exc:
                    failures.append(exc)
                    break
                time.sleep(0.005)
            reconnects.append(session.reconnects)

    robots = [threading.Thread(target=act_calls), threading.Thread(target=stream)]
    for robot in robots:
        robot.start()
    try:
        # A failure ends the wait, so the assertion below names it instead of a timeout.
        _wait_for(lambda: failures or (len(acted) >= 20 and len(streamed) >= 20))
        deploy("rolling", policies["v3"])  # returns once the new replica serves
        n = len(acted), len(streamed)
        _wait_for(lambda: failures or (len(acted) >= n[0] + 20 and len(streamed) >= n[1] + 20))
    finally:
        stop.set()
        for robot in robots:
            robot.join(60)
    assert failures == []
    assert np.allclose(acted[0], old, atol=1e-5) and np.allclose(acted[-1], new, atol=1e-5)
    assert all(np.allclose(a, old, atol=1e-5) or np.allclose(a, new, atol=1e-5) for a in acted)
    # The stream was moved to a new replica and its stack replayed: every step is one of the two
    # policies on the unbroken stream's stack, the last one the new policy's.
    steps = np.stack([frames[i % k] for i in range(len(streamed))])
    stream_old, stream_new = expected_actions(local["v1"], steps), expected_actions(local["v3"], steps)
    got = np.stack(streamed)
    on_old = np.isclose(got, stream_old, atol=1e-5).all(axis=1)
    on_new = np.isclose(got, stream_new, atol=1e-5).all(axis=1)
    assert (on_old | on_new).all() and on_new[-1] and on_old[0]
    assert reconnects[0] >= 1


def test_status_and_down(fleet, deploy, policies):
    deploy("doomed", policies["v2"])
    shown = run_fleet("status", "--address", fleet.ray_address)
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert "v1: RUNNING, replicas: running 1" in shown.stdout
    assert "gRPC proxies: 1 of 1 healthy" in shown.stdout
    assert "ingress HAProxy" in shown.stdout  # the fast path is on for the Ray that `up` starts
    assert "doomed: RUNNING" in shown.stdout and file_sha256(policies["v2"])[:12] in shown.stdout
    removed = run_fleet("down", "--version", "doomed", "--address", fleet.ray_address)
    assert removed.returncode == 0, removed.stderr[-3000:]
    assert "doomed" not in run_fleet("status", "--address", fleet.ray_address).stdout
    missing = run_fleet("down", "--version", "doomed", "--address", fleet.ray_address)
    assert missing.returncode == 2 and "no version 'doomed' is deployed" in missing.stderr
