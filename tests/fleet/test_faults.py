"""A policy that misbehaves on some input, on the fleet as on semore-serve: a non-finite action
fails only the call whose stack gave it (INTERNAL, no action sent), never a neighbour in its
batch, and the robot's session goes on."""

from __future__ import annotations

import threading

import grpc
import numpy as np
import pytest

from devkit.tiny_policy import WHITE, build_tiny_policy
from semore_runtime.client import PolicyClient, PolicyServerError
from semore_runtime.policy import OnnxPolicy
from semore_runtime.proto_gen.semore.v1 import policy_pb2, policy_pb2_grpc
from tests.helpers.serving import StreamDriver, expected_actions, random_frames, raw_frame

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def poisoned(deploy, fleet_dir) -> OnnxPolicy:
    """Version "poisoned": NaN actions for a stack whose newest frame is all white; a 50 ms batch
    window, so the steps of open streams that arrive together share a model call."""
    path = build_tiny_policy(fleet_dir / "poisoned.onnx", poison="nan")
    deploy("poisoned", path, "--batch-wait-us", "50000")
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


def _step_together(target: str, metadata, frames: list[np.ndarray]) -> list:
    """One StreamAct stream per robot: each sends its frames in lockstep with the others (all
    streams open and active, so the replica batches each round); each robot's Actions, ending
    with the RpcError its stream ended with, if any."""
    together = threading.Barrier(len(frames))
    results: list[list] = [[] for _ in frames]

    def robot(n: int) -> None:
        with grpc.insecure_channel(target) as channel:
            driver = StreamDriver(policy_pb2_grpc.PolicyServiceStub(channel), metadata=metadata)
            try:
                for seq, frame in enumerate(frames[n]):
                    together.wait(30)
                    results[n].append(driver.step(policy_pb2.Observation(seq=seq, frame=raw_frame(frame))))
            except grpc.RpcError as exc:
                results[n].append(exc)
                together.abort()  # the others' next round would wait for this robot
            except threading.BrokenBarrierError:
                pass
            finally:
                driver.close()

    robots = [threading.Thread(target=robot, args=(n,)) for n in range(len(frames))]
    for r in robots:
        r.start()
    for r in robots:
        r.join(60)
    return results


def test_a_non_finite_action_fails_only_its_own_stream(fleet, poisoned, token):
    """Each round of four robots is one batch: the one that gives NaN fails alone (the batch is rerun
    stack by stack), and the others' actions in that round are right."""
    frames = [random_frames(3, seed=20 + n) for n in range(4)]
    metadata = (("authorization", f"Bearer {token}"), ("application", "poisoned"))
    clean = _step_together(fleet.target, metadata, frames)
    assert max(action.batch_size for actions in clean for action in actions) > 1  # rounds share model calls
    frames[1][-1] = WHITE
    results = _step_together(fleet.target, metadata, frames)
    assert isinstance(results[1][-1], grpc.RpcError) and results[1][-1].code() == grpc.StatusCode.INTERNAL
    for n in (0, 2, 3):
        np.testing.assert_allclose(
            [action.action for action in results[n]], expected_actions(poisoned, frames[n]), atol=1e-5
        )
