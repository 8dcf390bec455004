"""The fleet serves semore.v1.PolicyService as semore-serve does: the same actions as the policy
in-process, bad input refused with INVALID_ARGUMENT while the fleet keeps serving, no call
without the token. Against a real local Ray Serve (the session's ``fleet``)."""

from __future__ import annotations

import threading

import grpc
import numpy as np
import pytest

from semore_runtime.client import AuthenticationError, InvalidInputError, PolicyClient
from semore_runtime.policy import file_sha256
from semore_runtime.proto_gen.semore.v1 import policy_pb2, policy_pb2_grpc
from tests.helpers.serving import expected_actions, random_frames, raw_frame

pytestmark = pytest.mark.ray


def test_get_spec_names_the_version_and_the_file(client, local, policies, v1_metadata):
    assert client.spec() == local["v1"].spec
    assert client.served_version() == "v1"
    with grpc.insecure_channel(client.target) as channel:
        response = policy_pb2_grpc.PolicyServiceStub(channel).GetSpec(
            policy_pb2.GetSpecRequest(), metadata=v1_metadata
        )
    assert response.model_sha256 == file_sha256(policies["v1"])
    assert (response.height, response.frame_stack) == (local["v1"].spec.height, local["v1"].spec.frame_stack)


def test_actions_equal_the_policy_in_process(client, local):
    policy = local["v1"]
    frames = random_frames(10, seed=3)
    with client.session() as session:
        streamed = []
        for i, frame in enumerate(frames):
            if i == 6:
                session.reset()  # a new episode: the frame fills the server's stack again
            streamed.append(session.step(frame))
    np.testing.assert_allclose(np.stack(streamed), expected_actions(policy, frames, {0, 6}), atol=1e-5)
    k = policy.spec.frame_stack
    np.testing.assert_allclose(client.act(frames[:k]), policy.act(frames[:k]), atol=1e-5)


def test_concurrent_streams_keep_their_own_stacks(fleet, local, token):
    """Eight robots at once share batches in the replica, and each gets its own stream's actions."""
    frames = {robot: random_frames(8, seed=100 + robot) for robot in range(8)}
    got: dict[int, np.ndarray] = {}

    def robot(n: int) -> None:
        with PolicyClient(fleet.target, token=token, version="v1") as c, c.session() as s:
            got[n] = np.stack([s.step(frame) for frame in frames[n]])

    threads = [threading.Thread(target=robot, args=(n,)) for n in frames]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for n, robot_frames in frames.items():
        np.testing.assert_allclose(got[n], expected_actions(local["v1"], robot_frames), atol=1e-5)


def test_bad_frames_get_invalid_argument_and_the_fleet_keeps_serving(client, local, v1_metadata):
    spec = local["v1"].spec
    good = random_frames(spec.frame_stack, seed=4)
    small = random_frames(1, seed=5, height=spec.height // 2, width=spec.width)[0]
    with pytest.raises(InvalidInputError, match=r"frames\[0\]: frame is \d+x\d+ .* but the policy expects"):
        client.act([small, *good[1:]])
    with pytest.raises(InvalidInputError, match=f"exactly frame_stack={spec.frame_stack} frames"):
        client.act(good[:1])
    # Raw bytes of the wrong length (what a float or 4-channel frame sent as RGB8 looks like).
    wrong = raw_frame(good[0])
    wrong.data = good[0].astype(np.float32).tobytes()
    not_set = policy_pb2.Frame(data=b"\x00" * 12, height=2, width=2)
    with grpc.insecure_channel(client.target) as channel:
        stub = policy_pb2_grpc.PolicyServiceStub(channel)
        for frame, message in [(wrong, "needs .* bytes"), (not_set, "ENCODING_UNSPECIFIED")]:
            request = policy_pb2.ActRequest(frames=[frame] + [raw_frame(f) for f in good[1:]])
            with pytest.raises(grpc.RpcError) as refused:
                stub.Act(request, metadata=v1_metadata)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert refused.match(message)
    with client.session() as session:
        session.step(good[0])
        with pytest.raises(InvalidInputError, match=r"observation seq=\d+: frame is"):
            session.step(small)
    # Still serving, on the same replica: the right actions for good frames.
    np.testing.assert_allclose(client.act(good), local["v1"].act(good), atol=1e-5)


@pytest.mark.parametrize(
    ("token", "message"), [(None, "missing 'authorization: Bearer"), ("wrong", "invalid bearer token")]
)
def test_calls_without_the_token_are_refused(fleet, local, token, message):
    frames = random_frames(local["v1"].spec.frame_stack, seed=6)
    with PolicyClient(fleet.target, token=token, version="v1", retries=0) as c:
        with pytest.raises(AuthenticationError, match=message):
            c.spec()
        with pytest.raises(AuthenticationError, match=message):
            c.act(frames)
    # StreamAct itself (a session would stop at its GetSpec first).
    metadata = (("application", "v1"),) + ((("authorization", f"Bearer {token}"),) if token else ())
    with grpc.insecure_channel(fleet.target) as channel:
        call = policy_pb2_grpc.PolicyServiceStub(channel).StreamAct(
            iter([policy_pb2.Observation(seq=1, frame=raw_frame(frames[0]))]), metadata=metadata
        )
        with pytest.raises(grpc.RpcError) as refused:
            list(call)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert refused.match(message)
