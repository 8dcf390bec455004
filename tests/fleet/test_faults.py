"""A policy that misbehaves on some input, on the fleet as on semore-serve: a non-finite action
fails only the call whose stack gave it (INTERNAL, no action sent), never a neighbour in its
batch, and the robot's session goes on."""

from __future__ import annotations

import threading

import grpc
import numpy as np
import pytest

from semore_runtime.client import PolicyClient, PolicyServerError
from semore_runtime.policy import OnnxPolicy
from semore_runtime.proto_gen.semore.v1 import policy_pb2, policy_pb2_grpc
from tests.helpers.serving import WHITE, build_tiny_policy, expected_actions, random_frames, raw_frame

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def poisoned(deploy, fleet_dir) -> OnnxPolicy:
    """Version "poisoned": NaN actions for a stack whose newest frame is all white; a 50 ms batch
    window, so calls that arrive together share a model call."""
    path = build_tiny_policy(fleet_dir / "poisoned.onnx", poison="nan")
    deploy("poisoned", path, "--batch-wait-ms", "50")
    return OnnxPolicy(path, device="cpu", threads=1, spinning=False)


def white(frame: np.ndarray) -> np.ndarray:
    return np.full_like(frame, WHITE)


def test_a_non_finite_action_fails_its_step_and_the_session_goes_on(fleet, poisoned, token):
    frames = random_frames(4, seed=13)
    want = expected_actions(poisoned, frames)  # the failed frame joins no stack
    with PolicyClient(fleet.target, token=token, version="poisoned") as client, client.session() as session:
        for i in (0, 1):
            np.testing.assert_allclose(session.step(frames[i]), want[i], atol=1e-5)
        with pytest.raises(PolicyServerError, match="non-finite action .*no action was sent") as failed:
            session.step(white(frames[0]))
        assert failed.value.code == grpc.StatusCode.INTERNAL
        for i in (2, 3):
            np.testing.assert_allclose(session.step(frames[i]), want[i], atol=1e-5)


def _act_together(target: str, metadata, stacks: list[np.ndarray]) -> list:
    """Act calls for ``stacks`` from as many robots at once: each one's Action or RpcError."""
    start = threading.Barrier(len(stacks))
    results: list = [None] * len(stacks)

    def robot(n: int) -> None:
        with grpc.insecure_channel(target) as channel:
            stub = policy_pb2_grpc.PolicyServiceStub(channel)
            request = policy_pb2.ActRequest(seq=n, frames=[raw_frame(f) for f in stacks[n]])
            grpc.channel_ready_future(channel).result(timeout=30)
            start.wait(30)
            try:
                results[n] = stub.Act(request, metadata=metadata, timeout=30)
            except grpc.RpcError as exc:
                results[n] = exc

    robots = [threading.Thread(target=robot, args=(n,)) for n in range(len(stacks))]
    for r in robots:
        r.start()
    for r in robots:
        r.join(60)
    return results


def test_a_non_finite_action_fails_only_its_own_call(fleet, poisoned, token):
    k = poisoned.spec.frame_stack
    stacks = [random_frames(k, seed=20 + n) for n in range(4)]
    metadata = (("authorization", f"Bearer {token}"), ("application", "poisoned"))
    clean = _act_together(fleet.target, metadata, stacks)
    assert max(action.batch_size for action in clean) > 1  # calls that arrive together share a model call
    stacks[1][-1] = WHITE
    results = _act_together(fleet.target, metadata, stacks)
    assert isinstance(results[1], grpc.RpcError) and results[1].code() == grpc.StatusCode.INTERNAL
    for n in (0, 2, 3):
        np.testing.assert_allclose(results[n].action, poisoned.act(stacks[n]), atol=1e-5)
