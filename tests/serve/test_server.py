"""semore-serve against a real server on a free loopback port: spec, streaming, unary, concurrency,
bad input, limits, disconnects and metrics."""

from __future__ import annotations

import io
import logging
import threading
import time
import urllib.request

import grpc
import numpy as np
import pytest
from PIL import Image

from devkit import tiny_policy
from semore_runtime.client import PolicyClient, PolicyServerError
from semore_runtime.policy import OnnxPolicy
from semore_runtime.proto_gen.semore.v1 import policy_pb2, policy_pb2_grpc
from semore_runtime.spec import PolicySpec
from tests.helpers import serving
from tests.helpers.serving import StreamDriver, expected_actions, raw_frame, wait_until

Frame = policy_pb2.Frame
Observation = policy_pb2.Observation


def test_get_spec_matches_the_policy(stub, local_policy):
    response = stub.GetSpec(policy_pb2.GetSpecRequest(), timeout=5)
    spec = PolicySpec.model_validate_json(response.spec_json)
    assert spec == local_policy.spec
    assert (response.height, response.width, response.channels) == spec.frame_shape
    assert response.frame_stack == spec.frame_stack and response.action_dim == spec.action_dim
    np.testing.assert_allclose(response.action_low, spec.action_low, rtol=1e-6)
    np.testing.assert_allclose(response.action_high, spec.action_high, rtol=1e-6)
    assert response.env_id == spec.env_id and not response.resize


def test_stream_matches_local_framestack_with_resets(stub, local_policy, random_frames):
    frames = random_frames(12, seed=1)
    resets = {0, 4, 5, 9}  # a reset right after a reset, and one mid-stack
    want = expected_actions(local_policy, frames, resets)
    driver = StreamDriver(stub)
    for i, frame in enumerate(frames):
        action = driver.step(Observation(seq=100 + i, frame=raw_frame(frame), reset=i in resets and i > 0))
        assert action.seq == 100 + i
        assert action.batch_size >= 1 and action.inference_us > 0 and action.server_us >= action.inference_us
        np.testing.assert_allclose(action.action, want[i], rtol=1e-4, atol=1e-5)
    driver.close()
    assert list(driver.call) == []  # the server ends the stream cleanly after the half-close
    assert driver.call.code() == grpc.StatusCode.OK


def test_first_frame_of_a_stream_fills_the_stack(stub, local_policy, spec, random_frames):
    frames = random_frames(2, seed=2)
    driver = StreamDriver(stub)
    # No reset flag: a new stream starts an episode anyway.
    action = driver.step(Observation(seq=1, frame=raw_frame(frames[0])))
    np.testing.assert_allclose(
        action.action, local_policy.act(np.stack([frames[0]] * spec.frame_stack)), rtol=1e-4, atol=1e-5
    )
    driver.close()


def test_unary_act(stub, local_policy, spec, random_frames):
    frames = random_frames(spec.frame_stack, seed=3)
    action = stub.Act(policy_pb2.ActRequest(seq=7, frames=[raw_frame(f) for f in frames]), timeout=5)
    assert action.seq == 7
    np.testing.assert_allclose(action.action, local_policy.act(frames), rtol=1e-4, atol=1e-5)


def test_png_and_jpeg_frames_are_accepted(stub, local_policy, spec, random_frames):
    frames = random_frames(spec.frame_stack, seed=4)

    def png(f: np.ndarray) -> Frame:
        buffer = io.BytesIO()
        Image.fromarray(f).save(buffer, format="PNG")
        return Frame(data=buffer.getvalue(), encoding=Frame.PNG)

    action = stub.Act(policy_pb2.ActRequest(frames=[png(f) for f in frames]), timeout=5)
    np.testing.assert_allclose(action.action, local_policy.act(frames), rtol=1e-4, atol=1e-5)  # lossless
    buffer = io.BytesIO()
    Image.fromarray(frames[0]).save(buffer, format="JPEG")
    jpeg = Frame(data=buffer.getvalue(), height=spec.height, width=spec.width, encoding=Frame.JPEG)
    action = stub.Act(policy_pb2.ActRequest(frames=[jpeg] * spec.frame_stack), timeout=5).action
    assert len(action) == spec.action_dim


def test_32_concurrent_streams_lose_and_reorder_nothing(server, local_policy, random_frames):
    n_streams, n_frames = 32, 200
    failures: list[str] = []
    batch_sizes: list[int] = []
    barrier = threading.Barrier(n_streams)

    def run(sid: int, channel: grpc.Channel) -> None:
        frames = random_frames(n_frames, seed=1000 + sid)
        resets = {0, 50 + sid, 150}
        want = expected_actions(local_policy, frames, resets)
        requests = [
            Observation(seq=sid * 10_000 + i, frame=raw_frame(f), reset=i in resets)
            for i, f in enumerate(frames)
        ]
        barrier.wait(10)
        got = list(policy_pb2_grpc.PolicyServiceStub(channel).StreamAct(iter(requests), timeout=60))
        if [a.seq for a in got] != [r.seq for r in requests]:
            failures.append(f"stream {sid}: {len(got)} responses, seqs out of order or missing")
            return
        actions = np.array([a.action for a in got], dtype=np.float32)
        if not np.allclose(actions, want, rtol=1e-4, atol=1e-5):
            failures.append(f"stream {sid}: actions differ from the local FrameStack reference")
        batch_sizes.extend(a.batch_size for a in got)

    # Two channels, so the streams really are concurrent HTTP/2 streams over more than one connection.
    channels = [grpc.insecure_channel(server.address) for _ in range(2)]
    threads = [threading.Thread(target=run, args=(s, channels[s % 2])) for s in range(n_streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    for channel in channels:
        channel.close()
    assert not failures, failures
    assert len(batch_sizes) == n_streams * n_frames
    assert max(batch_sizes) > 1, "32 pipelined streams never shared a model call"
    assert wait_until(lambda: server.active_streams == 0)


def test_an_idle_open_stream_does_not_slow_a_busy_one(start_server, random_frames):
    server = start_server(batch_wait_us=50_000)  # a 50 ms batching window, to make any wait obvious
    frames = random_frames(10, seed=12)
    with grpc.insecure_channel(server.address) as channel:
        stub = policy_pb2_grpc.PolicyServiceStub(channel)
        idle = StreamDriver(stub)
        idle.step(Observation(seq=0, frame=raw_frame(frames[0])))
        time.sleep(0.25)  # the idle stream's activity window (2 x 50 ms) runs out
        busy = StreamDriver(stub)
        t0 = time.monotonic()
        for i, frame in enumerate(frames):
            assert busy.step(Observation(seq=i, frame=raw_frame(frame))).batch_size == 1
        assert time.monotonic() - t0 < 0.25, "the busy stream waited for the idle one"
        idle.close()
        busy.close()


# -- bad input ---------------------------------------------------------------------------------


def _bad_frames(good: np.ndarray) -> dict[str, tuple[Frame | None, str]]:
    """Every way to get a stream's frame wrong, made from a good one: case -> (frame, message)."""
    h, w = good.shape[:2]
    buffer = io.BytesIO()
    Image.fromarray(good).save(buffer, format="PNG")
    png = buffer.getvalue()
    return {
        "wrong-size": (raw_frame(good[: h - 8]), f"frame is {h - 8}x{w}"),
        "byte-count": (
            Frame(data=good.tobytes()[:1000], height=h, width=w, encoding=Frame.RAW_RGB8),
            "got 1000",
        ),
        "unknown-encoding": (
            Frame(data=good.tobytes(), height=h, width=w, encoding=42),
            "unknown frame encoding",
        ),
        "corrupt-jpeg": (Frame(data=b"\xff\xd8\xff\xdb" + b"\x00" * 50, encoding=Frame.JPEG), "corrupt JPEG"),
        "corrupt-png": (Frame(data=png[:40] + b"\x00" * 40, encoding=Frame.PNG), "corrupt PNG"),
        "empty": (Frame(data=b"", height=h, width=w, encoding=Frame.RAW_RGB8), "empty"),
        "missing-frame": (None, "has no frame"),
        "missing-encoding": (Frame(data=good.tobytes(), height=h, width=w), "encoding is not set"),
        "missing-dims": (Frame(data=good.tobytes(), encoding=Frame.RAW_RGB8), "needs height and width"),
    }


@pytest.mark.parametrize("case", list(_bad_frames(np.zeros((32, 32, 3), np.uint8))))  # any frame names them
def test_bad_stream_input_fails_only_that_stream(server, local_policy, spec, case, random_frames):
    bad, message = _bad_frames(random_frames(1, seed=5)[0])[case]
    frames = random_frames(4, seed=6)
    want = expected_actions(local_policy, frames)
    with grpc.insecure_channel(server.address) as channel:
        stub = policy_pb2_grpc.PolicyServiceStub(channel)
        bystander = StreamDriver(stub)  # another stream, open across the failure
        np.testing.assert_allclose(
            bystander.step(Observation(seq=0, frame=raw_frame(frames[0]))).action,
            want[0],
            rtol=1e-4,
            atol=1e-5,
        )
        victim = StreamDriver(stub)
        victim.step(Observation(seq=1, frame=raw_frame(frames[0])))
        obs = Observation(seq=2) if bad is None else Observation(seq=2, frame=bad)
        with pytest.raises(grpc.RpcError) as info:
            victim.step(obs)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in info.value.details() and "seq=2" in info.value.details()
        for i in range(1, 4):  # the bystander carries on with its stack intact
            action = bystander.step(Observation(seq=i, frame=raw_frame(frames[i])))
            np.testing.assert_allclose(action.action, want[i], rtol=1e-4, atol=1e-5)
        bystander.close()
        # ...and so does the unary path.
        act = policy_pb2.ActRequest(frames=[raw_frame(frames[0])] * spec.frame_stack)
        assert len(stub.Act(act, timeout=5).action) == spec.action_dim
    assert wait_until(lambda: server.active_streams == 0)


def test_a_closed_stream_logs_why(server, random_frames, caplog):
    frame = raw_frame(random_frames(1, seed=14)[0])

    def reasons() -> list[str]:
        return sorted(r.reason for r in caplog.records if getattr(r, "event", None) == "stream_closed")

    with (
        caplog.at_level(logging.INFO, logger="serve.core"),
        grpc.insecure_channel(server.address) as channel,
    ):
        stub = policy_pb2_grpc.PolicyServiceStub(channel)
        finished = StreamDriver(stub)
        finished.step(Observation(seq=1, frame=frame))
        finished.close()
        assert list(finished.call) == []
        refused = StreamDriver(stub)
        with pytest.raises(grpc.RpcError):
            refused.step(Observation(seq=1))  # no frame
        assert wait_until(lambda: server.active_streams == 0)
        # The server frees the slot just before it logs the close: wait for both lines too.
        wait_until(lambda: len(reasons()) == 2)
    assert reasons() == ["bad input", "client finished"]


@pytest.mark.parametrize("case", ["too-few", "too-many", "bad-frame"])
def test_bad_unary_input(stub, spec, case, random_frames):
    good = raw_frame(random_frames(1, seed=7)[0])
    k = spec.frame_stack
    bad = Frame(data=b"x", height=spec.height, width=spec.width, encoding=Frame.RAW_RGB8)
    frames, message = {
        "too-few": ([good] * (k - 1), f"exactly frame_stack={k} frames"),
        "too-many": ([good] * (k + 1), f"got {k + 1}"),
        "bad-frame": ([bad] + [good] * (k - 1), "frames[0]"),
    }[case]
    with pytest.raises(grpc.RpcError) as info:
        stub.Act(policy_pb2.ActRequest(frames=frames), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in info.value.details()


def test_resize_flag(start_server, local_policy, spec, random_frames):
    server = start_server(resize=True)
    big = random_frames(spec.frame_stack, seed=8, height=spec.height + 16, width=spec.width * 2)
    size = (spec.width, spec.height)
    small = np.stack([np.asarray(Image.fromarray(f).resize(size, Image.Resampling.BILINEAR)) for f in big])
    with grpc.insecure_channel(server.address) as channel:
        stub = policy_pb2_grpc.PolicyServiceStub(channel)
        assert stub.GetSpec(policy_pb2.GetSpecRequest(), timeout=5).resize
        action = stub.Act(policy_pb2.ActRequest(frames=[raw_frame(f) for f in big]), timeout=5)
    np.testing.assert_allclose(action.action, local_policy.act(small), rtol=1e-4, atol=1e-5)


# -- safe actions and contained failures (the poisoned tiny policy misbehaves on a white frame) ----


def white_frame() -> np.ndarray:
    return np.full((*tiny_policy.TINY_HW, 3), tiny_policy.WHITE, dtype=np.uint8)


def sample(server, name: str, **labels: str) -> float | None:
    return server.core.metrics.registry.get_sample_value(name, labels)


@pytest.mark.parametrize("poison", ["nan", "inf"])
def test_a_non_finite_action_fails_its_observation_and_the_session_goes_on(
    start_server, poisoned_policy, poison
):
    server = start_server(model=poisoned_policy(poison))
    local = OnnxPolicy(poisoned_policy(poison), device="cpu", threads=1, spinning=False)
    frames = serving.random_frames(4, seed=40)
    # The failed frame is not part of any later stack: the next ones are those of frames 0..3.
    want = expected_actions(local, frames)
    with PolicyClient(server.address) as client, client.session() as session:
        for i in (0, 1):
            np.testing.assert_allclose(session.step(frames[i]), want[i], rtol=1e-4, atol=1e-5)
        with pytest.raises(PolicyServerError) as info:
            session.step(white_frame())
        assert info.value.code == grpc.StatusCode.INTERNAL
        assert "the policy produced a non-finite action" in info.value.details
        assert "no action was sent" in info.value.details
        for i in (2, 3):  # same session, same episode: the stack before the failure carries on
            np.testing.assert_allclose(session.step(frames[i]), want[i], rtol=1e-4, atol=1e-5)
        with pytest.raises(PolicyServerError, match="non-finite action") as info:
            client.act(np.stack([frames[0], frames[1], white_frame()]))
        assert info.value.code == grpc.StatusCode.INTERNAL
    assert sample(server, "semore_nonfinite_actions_total", method="StreamAct") == 1
    assert sample(server, "semore_nonfinite_actions_total", method="Act") == 1
    assert sample(server, "semore_errors_total", method="StreamAct", code="INTERNAL") == 1
    assert wait_until(lambda: server.active_streams == 0)


def test_out_of_bounds_actions_are_clamped_and_counted(start_server, poisoned_policy):
    server = start_server(model=poisoned_policy("1e6"))
    frames = serving.random_frames(2, seed=41)
    with PolicyClient(server.address) as client, client.session() as session:
        healthy = session.step(frames[0])
        assert (np.abs(healthy) < 1).all()  # inside [-1, 1]: nothing to clamp
        np.testing.assert_array_equal(session.step(white_frame()), [1.0, 1.0])  # 1e6 -> the bound
        assert (np.abs(session.step(frames[1])) < 1).all()
    assert sample(server, "semore_clamped_actions_total") == 1
    assert sample(server, "semore_errors_total", method="StreamAct", code="INTERNAL") is None


@pytest.mark.parametrize(
    "poison, message", [("raise", "policy call failed"), ("nan", "non-finite action")], ids=["raise", "nan"]
)
def test_a_poisoned_input_fails_only_its_own_stream(start_server, poisoned_policy, poison, message, caplog):
    # A 50 ms window and 8 active streams in lockstep: each step is one batch of all 8.
    server = start_server(model=poisoned_policy(poison), batch_wait_us=50_000, max_batch=8)
    local = OnnxPolicy(poisoned_policy(poison), device="cpu", threads=1, spinning=False)
    n_streams, victim, lockstep = 8, 3, 4
    barrier = threading.Barrier(n_streams)
    answers: dict[int, list[np.ndarray]] = {}
    failures: dict[int, grpc.RpcError] = {}

    def run(sid: int, stub: policy_pb2_grpc.PolicyServiceStub) -> None:
        frames = serving.random_frames(lockstep + 1, seed=60 + sid)
        if sid == victim:
            frames[lockstep - 1] = white_frame()  # in the last lockstep batch
        driver = StreamDriver(stub)
        got = answers.setdefault(sid, [])
        try:
            for i, frame in enumerate(frames):
                if i < lockstep:
                    barrier.wait(10)
                got.append(np.array(driver.step(Observation(seq=i, frame=raw_frame(frame))).action))
        except grpc.RpcError as exc:
            failures[sid] = exc
        finally:
            driver.close()

    with (
        caplog.at_level(logging.WARNING, logger="serve.batcher"),
        grpc.insecure_channel(server.address) as ch,
    ):
        stub = policy_pb2_grpc.PolicyServiceStub(ch)
        threads = [threading.Thread(target=run, args=(sid, stub)) for sid in range(n_streams)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    assert any("retrying one at a time" in r.getMessage() for r in caplog.records), "never batched"
    assert list(failures) == [victim]
    assert failures[victim].code() == grpc.StatusCode.INTERNAL and message in failures[victim].details()
    assert len(answers[victim]) == lockstep - 1
    for sid in set(range(n_streams)) - {victim}:  # every other stream got every action, right
        want = expected_actions(local, serving.random_frames(lockstep + 1, seed=60 + sid))
        np.testing.assert_allclose(np.array(answers[sid]), want, rtol=1e-4, atol=1e-5)
    assert sample(server, "semore_errors_total", method="StreamAct", code="INTERNAL") == 1
    assert wait_until(lambda: server.active_streams == 0)


# -- limits and lifecycle ------------------------------------------------------------------------


def test_message_size_limit(start_server, spec):
    server = start_server(max_message_bytes=64 * 1024)
    frame = Frame(data=bytes(200_000), height=1, width=1, encoding=Frame.RAW_RGB8)
    with grpc.insecure_channel(server.address) as channel:
        stub = policy_pb2_grpc.PolicyServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Act(policy_pb2.ActRequest(frames=[frame]), timeout=5)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert stub.GetSpec(policy_pb2.GetSpecRequest(), timeout=5).frame_stack == spec.frame_stack


def test_max_streams(start_server, spec, random_frames):
    server = start_server(max_streams=2, max_streams_per_client=2)
    frame = raw_frame(random_frames(1, seed=9)[0])
    with grpc.insecure_channel(server.address) as channel:
        stub = policy_pb2_grpc.PolicyServiceStub(channel)
        first, second = StreamDriver(stub), StreamDriver(stub)
        first.step(Observation(seq=1, frame=frame))
        second.step(Observation(seq=1, frame=frame))
        third = StreamDriver(stub)
        with pytest.raises(grpc.RpcError) as info:
            third.step(Observation(seq=1, frame=frame))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max-streams" in info.value.details()
        # Unary calls are not streams: they still work at the stream limit.
        act = policy_pb2.ActRequest(frames=[frame] * spec.frame_stack)
        assert len(stub.Act(act, timeout=5).action) == spec.action_dim
        first.close()
        list(first.call)
        assert wait_until(lambda: server.active_streams == 1)
        fourth = StreamDriver(stub)
        assert fourth.step(Observation(seq=5, frame=frame)).seq == 5
        second.close()
        fourth.close()


def test_client_disconnect_frees_stream_state(server, random_frames):
    frame = raw_frame(random_frames(1, seed=10)[0])
    channel = grpc.insecure_channel(server.address)
    stub = policy_pb2_grpc.PolicyServiceStub(channel)
    drivers = [StreamDriver(stub) for _ in range(3)]
    for d in drivers:
        d.step(Observation(seq=1, frame=frame))
    assert server.active_streams == 3 and server.core.batcher.producers == 3
    channel.close()  # vanishes without half-closing its streams
    assert wait_until(lambda: server.active_streams == 0), "stream state leaked after the client went away"
    assert server.core.batcher.producers == 0
    # A client gone mid-stream does not hurt the next one.
    with grpc.insecure_channel(server.address) as channel2:
        d = StreamDriver(policy_pb2_grpc.PolicyServiceStub(channel2))
        assert d.step(Observation(seq=9, frame=frame)).seq == 9
        d.close()


def test_metrics_endpoint(start_server, random_frames):
    server = start_server(metrics_port=0)
    frame = raw_frame(random_frames(1, seed=11)[0])
    with grpc.insecure_channel(server.address) as channel:
        stub = policy_pb2_grpc.PolicyServiceStub(channel)
        d = StreamDriver(stub)
        for i in range(5):
            d.step(Observation(seq=i, frame=frame))
        d.close()
        with pytest.raises(grpc.RpcError):
            stub.Act(policy_pb2.ActRequest(frames=[frame]), timeout=5)
    body = (
        urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read().decode()
    )
    assert 'semore_requests_total{method="StreamAct"} 5.0' in body
    assert 'semore_errors_total{code="INVALID_ARGUMENT",method="Act"} 1.0' in body
    assert "semore_batch_size_count" in body and "semore_inference_seconds_bucket" in body
    assert 'semore_request_seconds_count{method="StreamAct"} 5.0' in body
    assert "semore_active_streams" in body and "semore_ready 1.0" in body
    assert "semore_clamped_actions_total 0.0" in body and "# TYPE semore_nonfinite_actions_total" in body


def test_reflection_lists_the_services(server):
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    with grpc.insecure_channel(server.address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        assert {"semore.v1.PolicyService", "grpc.health.v1.Health"} <= services
        method = database.FindFileContainingSymbol("semore.v1.PolicyService")
        assert method.package == "semore.v1"
