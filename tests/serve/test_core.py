"""PolicyCore without a network: the rules semore-serve and the fleet share, driven directly with
protobuf messages and a real ONNX policy, on an event loop of the test's own."""

from __future__ import annotations

import asyncio
import logging

import grpc
import numpy as np
import pytest
from google.protobuf.message import DecodeError

from devkit import tiny_policy
from semore_runtime.client import AuthenticationError, InvalidInputError, PolicyServerError
from semore_runtime.policy import NonFiniteActionError
from semore_runtime.proto_gen.semore.v1 import policy_pb2
from serve.batcher import BatcherClosedError
from serve.core import PolicyCore, Undecodable, status_of
from serve.decode import FrameError
from serve.limits import StreamLimitError
from tests.helpers import serving
from tests.helpers.serving import encoded, expected_actions, raw_frame

Code = grpc.StatusCode
ROBOT = "ipv4:10.0.0.7:50000"


def refusal(core: PolicyCore, method: str, call) -> tuple[grpc.StatusCode, str]:
    """Runs ``call()`` (a coroutine or a plain call) expecting it to raise: the status it ends with."""
    with pytest.raises(Exception) as info:  # any of the typed errors: the status is what counts
        result = call()
        if asyncio.iscoroutine(result):
            asyncio.run(result)
    return core.refuse(method, info.value)


def test_a_stream_answers_what_the_policy_does_on_its_stack(make_core, local_policy, random_frames):
    core = make_core()
    frames = random_frames(8, seed=1)
    resets = {0, 3, 4}

    async def run() -> list[policy_pb2.Action]:
        with core.open_stream(ROBOT) as stream:
            return [
                await stream.step(policy_pb2.Observation(seq=i, frame=raw_frame(f), reset=i in resets))
                for i, f in enumerate(frames)
            ]

    actions = asyncio.run(run())
    assert [a.seq for a in actions] == list(range(8))
    assert all(a.batch_size == 1 and a.server_us >= a.inference_us > 0 for a in actions)
    want = expected_actions(local_policy, frames, resets)
    np.testing.assert_allclose([a.action for a in actions], want, rtol=1e-4, atol=1e-5)
    assert len(core.streams) == 0 and core.batcher.producers == 0  # the with block freed it


def test_act_decodes_compressed_frames_off_the_loop_and_raw_ones_inline(
    make_core, local_policy, spec, random_frames
):
    core = make_core()
    frames = random_frames(spec.frame_stack, seed=2)
    wire = [policy_pb2.Frame(data=encoded(f, "PNG"), encoding=policy_pb2.Frame.PNG) for f in frames[:-1]]
    request = policy_pb2.ActRequest(seq=5, frames=[*wire, raw_frame(frames[-1])])
    action = asyncio.run(core.act(request, ROBOT))
    assert action.seq == 5
    np.testing.assert_allclose(action.action, local_policy.act(frames), rtol=1e-4, atol=1e-5)
    assert core.unary_in_flight == 0 and core.batcher.producers == 0


def test_bad_input_is_invalid_argument_naming_where(make_core, spec, random_frames):
    core = make_core()
    good = raw_frame(random_frames(1, seed=3)[0])
    short = policy_pb2.ActRequest(frames=[good] * (spec.frame_stack - 1))
    code, details = refusal(core, "Act", lambda: core.act(short, ROBOT))
    assert code == Code.INVALID_ARGUMENT and f"exactly frame_stack={spec.frame_stack}" in details
    broken = policy_pb2.Frame(
        data=b"x", height=spec.height, width=spec.width, encoding=policy_pb2.Frame.RAW_RGB8
    )
    request = policy_pb2.ActRequest(frames=[good, broken] + [good] * (spec.frame_stack - 2))
    code, details = refusal(core, "Act", lambda: core.act(request, ROBOT))
    assert code == Code.INVALID_ARGUMENT and details.startswith("frames[1]: ")
    undecodable = Undecodable(DecodeError("truncated"))
    assert refusal(core, "GetSpec", lambda: core.get_spec(undecodable))[0] == Code.INVALID_ARGUMENT

    async def steps() -> None:
        with core.open_stream(ROBOT) as stream:
            await stream.step(policy_pb2.Observation(seq=9))

    code, details = refusal(core, "StreamAct", lambda: steps())
    assert (code, details) == (Code.INVALID_ARGUMENT, "observation seq=9 has no frame")
    registry = core.metrics.registry
    assert (
        registry.get_sample_value("semore_errors_total", {"method": "Act", "code": "INVALID_ARGUMENT"}) == 2
    )
    assert registry.get_sample_value("semore_refused_frames_total", {"reason": "malformed"}) == 1


def test_no_call_before_the_warm_up_and_limits_per_client(make_core, random_frames):
    core = make_core(max_streams=3, max_streams_per_client=2)
    core.ready = False
    code, details = refusal(core, "StreamAct", lambda: core.open_stream(ROBOT))
    assert code == Code.UNAVAILABLE and "warming up" in details
    core.ready = True
    first, second = core.open_stream(ROBOT), core.open_stream("ipv4:10.0.0.7:50001")
    code, details = refusal(core, "StreamAct", lambda: core.open_stream("ipv4:10.0.0.7:50002"))
    assert code == Code.RESOURCE_EXHAUSTED and "--max-streams-per-client" in details
    core.open_stream("ipv4:10.0.0.8:50000")
    code, details = refusal(core, "StreamAct", lambda: core.open_stream("ipv4:10.0.0.9:50000"))
    assert code == Code.RESOURCE_EXHAUSTED and "(--max-streams)" in details
    first.close("done")
    second.close("done")
    assert len(core.streams) == 1


def test_authentication_raises_the_clients_own_error_type(make_core, tmp_path):
    token_file = tmp_path / "tokens"
    token_file.write_text("core-token\n")
    core = make_core(token_file=token_file)
    core.authenticate([("authorization", "Bearer core-token")])
    with pytest.raises(AuthenticationError) as info:
        core.authenticate([])
    assert info.value.code == Code.UNAUTHENTICATED
    assert core.refuse("Act", info.value) == (Code.UNAUTHENTICATED, info.value.details)
    make_core().authenticate([])  # auth off


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (FrameError("frame is empty", "empty"), (Code.INVALID_ARGUMENT, "frame is empty")),
        (StreamLimitError("full"), (Code.RESOURCE_EXHAUSTED, "full")),
        (BatcherClosedError("shutting down"), (Code.UNAVAILABLE, "shutting down")),
        (NonFiniteActionError("nan"), (Code.INTERNAL, "nan; no action was sent")),
        (AuthenticationError(Code.PERMISSION_DENIED, "no"), (Code.PERMISSION_DENIED, "no")),
        (PolicyServerError(Code.NOT_FOUND, "v9"), (Code.NOT_FOUND, "v9")),
        (RuntimeError("onnx broke"), (Code.INTERNAL, "policy call failed: onnx broke")),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else "",
)
def test_each_error_ends_a_call_with_one_status(error, status):
    assert status_of(error) == status


def test_a_non_finite_action_in_a_batch_fails_only_its_own_stream(make_core, poisoned_policy, caplog):
    # Four open streams stepping together, with a 50 ms window: each round is one batch of four.
    core = make_core(model=poisoned_policy("nan"), max_batch=8, batch_wait_s=0.05)
    frames = np.stack([serving.random_frames(3, seed=70 + sid) for sid in range(4)])
    frames[2, 1] = tiny_policy.WHITE  # stream 2's second step gives NaN

    async def step(stream, seq: int, frame: np.ndarray):
        try:
            return await stream.step(policy_pb2.Observation(seq=seq, frame=raw_frame(frame)))
        except NonFiniteActionError as exc:
            return exc

    async def run() -> list[list]:
        streams = [core.open_stream(f"ipv4:10.0.1.{sid}:1") for sid in range(4)]
        rounds = [
            await asyncio.gather(*(step(s, i, frames[sid, i]) for sid, s in enumerate(streams)))
            for i in range(3)
        ]
        for stream in streams:
            stream.close("done")
        return rounds

    with caplog.at_level(logging.WARNING, logger="serve.batcher"):
        rounds = asyncio.run(run())
    assert any("retrying one at a time" in r.getMessage() for r in caplog.records), "never batched"
    failed = rounds[1][2]
    assert isinstance(failed, NonFiniteActionError)
    assert core.refuse("StreamAct", failed) == (Code.INTERNAL, f"{failed}; no action was sent")
    for i, answers in enumerate(rounds):
        for sid, answer in enumerate(answers):
            if (i, sid) != (1, 2):  # the stack keeps the frame: the adapters end such a stream
                stack = np.concatenate([frames[sid, :1].repeat(2 - i, axis=0), frames[sid, : i + 1]])
                np.testing.assert_allclose(answer.action, core.policy.act(stack), rtol=1e-4, atol=1e-5)
    assert rounds[0][0].batch_size == 4
    assert (
        core.metrics.registry.get_sample_value("semore_nonfinite_actions_total", {"method": "StreamAct"}) == 1
    )


def test_a_stream_logs_why_it_ended(make_core, random_frames, caplog):
    core = make_core()
    frame = raw_frame(random_frames(1, seed=4)[0])

    async def stream(obs: policy_pb2.Observation) -> None:
        with core.open_stream(ROBOT) as s:
            await s.step(obs)

    with caplog.at_level(logging.INFO, logger="serve.core"):
        asyncio.run(stream(policy_pb2.Observation(seq=1, frame=frame)))
        with pytest.raises(InvalidInputError):
            asyncio.run(stream(policy_pb2.Observation(seq=1)))
    reasons = [r.reason for r in caplog.records if getattr(r, "event", None) == "stream_closed"]
    assert reasons == ["client finished", "bad input"]
