"""PolicyClient against a real semore-serve on loopback: sessions, unary calls, typed errors,
reconnects with frame replay, auth and TLS."""

from __future__ import annotations

import shutil
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pytest

from devkit.tiny_policy import build_tiny_policy
from semore_runtime.client import (
    DEFAULT_STEP_TIMEOUT_S,
    AuthenticationError,
    InvalidInputError,
    PolicyChangedError,
    PolicyClient,
    PolicyServerError,
    PolicyUnavailableError,
    ServerBusyError,
)
from semore_runtime.policy import OnnxPolicy, file_sha256
from semore_runtime.proto_gen.semore.v1 import policy_pb2
from tests.helpers.serving import (
    expected_actions,
    make_certs,
    make_self_signed,
    random_frames,
    serve_for_tests,
)


@pytest.fixture(scope="module")
def policy_path(tmp_path_factory) -> Path:
    return build_tiny_policy(tmp_path_factory.mktemp("client_policy") / "tiny_policy.onnx")


@pytest.fixture(scope="module")
def local_policy(policy_path) -> OnnxPolicy:
    return OnnxPolicy(policy_path, device="cpu", threads=1, spinning=False)


@pytest.fixture
def start_server(policy_path):
    yield from serve_for_tests(policy_path)


@pytest.fixture
def server(start_server):
    return start_server()


@pytest.fixture(params=[None, 5.0], ids=["no-step-timeout", "step-timeout"])
def step_timeout(request) -> float | None:
    """Both ways a session reads responses: directly, and through the timeout reader thread."""
    return request.param


@pytest.fixture
def client(server, step_timeout):
    with PolicyClient(server.address, retries=2, backoff_initial=0.01, step_timeout=step_timeout) as c:
        yield c


def test_spec_and_unary_act(client, local_policy):
    assert client.spec() == local_policy.spec
    frames = random_frames(3, seed=40)
    action = client.act(frames)
    assert action.dtype == np.float32 and action.shape == (2,)
    np.testing.assert_allclose(action, local_policy.act(frames), rtol=1e-4, atol=1e-5)


def test_session_steps_and_resets_like_framestack(client, local_policy):
    frames = random_frames(15, seed=41)
    resets = {0, 6, 7, 12}
    want = expected_actions(local_policy, frames, resets)
    with client.session() as session:
        for i, frame in enumerate(frames):
            if i in resets:
                session.reset()
            np.testing.assert_allclose(session.step(frame), want[i], rtol=1e-4, atol=1e-5)
            assert session.last.batch_size == 1 and session.last.inference_us > 0


def test_png_and_jpeg_encodings(server, local_policy):
    frames = random_frames(4, seed=42)
    want = expected_actions(local_policy, frames)
    with PolicyClient(server.address, encoding="png") as c, c.session() as session:
        got = np.array([session.step(f) for f in frames])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)  # PNG is lossless
    with PolicyClient(server.address, encoding="jpeg") as c:
        assert c.act(frames[:3]).shape == (2,)


def test_invalid_frame_is_a_typed_error_and_the_session_recovers(server, client, local_policy):
    frames = random_frames(8, seed=43)
    want = expected_actions(local_policy, frames)
    with client.session() as session:
        for i in range(4):
            session.step(frames[i])
        with pytest.raises(InvalidInputError) as info:
            session.step(random_frames(1, seed=44, height=16, width=16)[0])
        assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT and "16x16" in info.value.details
        # The rejected frame is not part of the episode: the next steps continue the same stack.
        for i in range(4, 8):
            np.testing.assert_allclose(session.step(frames[i]), want[i], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="uint8"):
        client.act(np.zeros((3, 32, 32, 3), dtype=np.float32))


def test_session_survives_a_server_restart(start_server, local_policy, step_timeout):
    server = start_server()
    port = server.port
    frames = random_frames(10, seed=45)
    want = expected_actions(local_policy, frames, {0, 8})
    with PolicyClient(
        server.address, retries=8, backoff_initial=0.02, backoff_max=0.2, step_timeout=step_timeout
    ) as c:
        session = c.session()
        for i in range(5):
            np.testing.assert_allclose(session.step(frames[i]), want[i], rtol=1e-4, atol=1e-5)
        server.stop(grace=0)  # the connection drops mid-episode
        start_server(port=port)  # ...and a new server comes up on the same port
        for i in range(5, 10):
            if i == 8:
                session.reset()
            # The session replays the last K-1 frames on the new stream: the actions are those of
            # an unbroken stream.
            np.testing.assert_allclose(session.step(frames[i]), want[i], rtol=1e-4, atol=1e-5)
        assert session.reconnects >= 1
        session.close()


def test_unreachable_server_raises_after_retries():
    with PolicyClient("127.0.0.1:1", retries=2, backoff_initial=0.01, timeout=2) as c:
        t0 = time.monotonic()
        with pytest.raises(PolicyUnavailableError) as info:
            c.spec()
        assert info.value.code == grpc.StatusCode.UNAVAILABLE
        assert time.monotonic() - t0 < 10
        with pytest.raises(PolicyUnavailableError), c.session() as session:
            session.step(random_frames(1, seed=46)[0])


def test_stream_limit_is_a_typed_error(start_server, step_timeout):
    server = start_server(max_streams=1)
    frame = random_frames(1, seed=47)[0]
    with PolicyClient(server.address, retries=0, step_timeout=step_timeout) as c:
        first = c.session()
        first.step(frame)
        with pytest.raises(ServerBusyError), c.session() as second:
            second.step(frame)
        first.close()
        deadline = time.monotonic() + 5
        while server.active_streams and time.monotonic() < deadline:
            time.sleep(0.02)
        with c.session() as third:  # closing a session frees its slot on the server
            assert third.step(frame).shape == (2,)


def test_token_auth(start_server, tmp_path, step_timeout):
    token_file = tmp_path / "token"
    token_file.write_text("# the server's token file, comments and all\n\nrobot-token\n")
    server = start_server(token_file=token_file)
    frame = random_frames(1, seed=48)[0]
    with (
        PolicyClient(server.address, token_file=token_file, step_timeout=step_timeout) as c,
        c.session() as session,
    ):
        assert session.step(frame).shape == (2,)
    with PolicyClient(server.address) as c, pytest.raises(AuthenticationError):
        c.spec()
    with (
        PolicyClient(server.address, token="wrong") as c,
        pytest.raises(AuthenticationError),
        c.session() as s,
    ):
        s.step(frame)
    assert issubclass(AuthenticationError, PolicyServerError)


def test_version_metadata_is_harmless_to_a_lone_server(server, local_policy):
    """A client set up for a fleet version still works against semore-serve, which names no version."""
    frames = random_frames(3, seed=50)
    with PolicyClient(server.address, version="v2") as c:
        assert c.served_version() == ""
        np.testing.assert_allclose(c.act(frames), local_policy.act(frames), rtol=1e-4, atol=1e-5)
        with c.session() as session:
            assert session.step(frames[0]).shape == (2,)


needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")


@needs_openssl
def test_tls_and_mutual_tls(start_server, tmp_path, local_policy):
    cert, key = make_self_signed(tmp_path / "tls")
    server = start_server(tls_cert=cert, tls_key=key)
    frames = random_frames(3, seed=49)
    with PolicyClient(server.address, root_certificates=cert) as c:
        np.testing.assert_allclose(c.act(frames), local_policy.act(frames), rtol=1e-4, atol=1e-5)
    certs = make_certs(tmp_path / "mtls")
    mtls = start_server(tls_cert=certs["server.pem"], tls_key=certs["server.key"], client_ca=certs["ca.pem"])
    with (
        PolicyClient(
            mtls.address,
            root_certificates=certs["ca.pem"],
            client_cert=certs["client.pem"],
            client_key=certs["client.key"],
        ) as c,
        c.session() as session,
    ):
        assert session.step(frames[0]).shape == (2,)
    # No client certificate: the handshake fails.
    with (
        PolicyClient(mtls.address, root_certificates=certs["ca.pem"], retries=0) as c,
        pytest.raises(PolicyServerError),
    ):
        c.spec()


def test_step_timeout_and_closed_session(start_server):
    server = start_server()
    frame = random_frames(1, seed=50)[0]
    with PolicyClient(server.address, step_timeout=5.0) as c:
        session = c.session()
        assert session.step(frame).shape == (2,)
        session.close()
        with pytest.raises(RuntimeError, match="closed"):
            session.step(frame)


def test_step_timeout_fires_on_a_stalled_server(start_server):
    server = start_server()
    frame = random_frames(1, seed=51)[0]
    with PolicyClient(server.address, step_timeout=0.2, retries=0) as c, c.session() as session:
        assert session.step(frame).shape == (2,)
        server.core.batcher.inline_when_alone = False
        server.core.batcher._model_lock.acquire()  # the policy hangs
        try:
            t0 = time.monotonic()
            with pytest.raises(PolicyUnavailableError) as info:
                session.step(frame)
            assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
            assert time.monotonic() - t0 < 2
        finally:
            server.core.batcher._model_lock.release()
        assert session.step(frame).shape == (2,)  # a new stream, the stack replayed


def test_session_works_inside_a_running_event_loop(server, local_policy):
    import asyncio

    frames = random_frames(3, seed=52)
    want = expected_actions(local_policy, frames)

    async def inside_loop():
        with PolicyClient(server.address) as c, c.session() as session:
            return [session.step(f) for f in frames]

    np.testing.assert_allclose(np.array(asyncio.run(inside_loop())), want, rtol=1e-4, atol=1e-5)


def test_spec_names_the_model_file(client, policy_path):
    assert client._get_spec().model_sha256 == file_sha256(policy_path)


@pytest.fixture
def hung_server(local_policy):
    """A bare grpc server whose StreamAct takes observations and never answers: a hung policy server."""
    release = threading.Event()

    def never_answer(requests, context):
        next(requests)
        release.wait(30)
        return iter(())

    def spec(_request, _context):
        return policy_pb2.GetSpecResponse(spec_json=local_policy.spec_json)

    handler = grpc.method_handlers_generic_handler(
        "semore.v1.PolicyService",
        {
            "StreamAct": grpc.stream_stream_rpc_method_handler(
                never_answer,
                request_deserializer=policy_pb2.Observation.FromString,
                response_serializer=policy_pb2.Action.SerializeToString,
            ),
            "GetSpec": grpc.unary_unary_rpc_method_handler(
                spec,
                request_deserializer=policy_pb2.GetSpecRequest.FromString,
                response_serializer=policy_pb2.GetSpecResponse.SerializeToString,
            ),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(4))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    release.set()
    server.stop(0)


def test_default_step_timeout_fires_on_a_hung_server(hung_server):
    with PolicyClient(hung_server) as c, c.session() as session:
        t0 = time.monotonic()
        with pytest.raises(PolicyUnavailableError) as info:
            session.step(random_frames(1, seed=53)[0])
        elapsed = time.monotonic() - t0
    assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert DEFAULT_STEP_TIMEOUT_S <= elapsed < DEFAULT_STEP_TIMEOUT_S + 0.5


def test_stream_limit_is_retried_while_a_slot_frees_within_the_timeout(start_server, local_policy):
    """A robot reconnecting while its old stream still holds the only slot gets in once it frees."""
    server = start_server(max_streams=1)
    frames = random_frames(2, seed=54)
    with PolicyClient(server.address, step_timeout=3.0, backoff_initial=0.02, backoff_max=0.1) as c:
        old = c.session()
        old.step(frames[0])
        threading.Timer(0.3, old.close).start()
        t0 = time.monotonic()
        with c.session() as new:
            np.testing.assert_allclose(
                new.step(frames[1]), local_policy.act(np.stack([frames[1]] * 3)), rtol=1e-4, atol=1e-5
            )
        assert 0.3 <= time.monotonic() - t0 < 3.0
        assert new.reconnects >= 1


def test_stream_limit_still_full_at_the_timeout_is_a_typed_error(start_server):
    server = start_server(max_streams=1)
    frame = random_frames(1, seed=55)[0]
    with PolicyClient(server.address, step_timeout=0.3) as c, c.session() as old:
        old.step(frame)
        t0 = time.monotonic()
        with pytest.raises(ServerBusyError), c.session() as new:
            new.step(frame)
        assert time.monotonic() - t0 < 1.0


def test_policy_swapped_on_restart_is_detected(start_server, tmp_path):
    server = start_server()
    port = server.port
    other = build_tiny_policy(tmp_path / "other.onnx", seed=7)  # same spec, other weights
    frame = random_frames(1, seed=56)[0]
    with PolicyClient(server.address, backoff_initial=0.02, backoff_max=0.2) as c, c.session() as session:
        session.step(frame)
        server.stop(grace=0)
        start_server(port=port, model=other)
        with pytest.raises(PolicyChangedError) as info:
            session.step(frame)
        assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert file_sha256(other)[:12] in info.value.details
        with pytest.raises(PolicyChangedError):  # the session never acts for the other policy
            session.step(frame)


def test_a_session_idle_past_the_servers_idle_timeout_carries_on(start_server, local_policy):
    """A robot pausing between steps longer than --idle-timeout: the server closed its stream, the
    session reconnects and replays, and the actions are those of an unbroken stream."""
    server = start_server(idle_timeout_s=0.3)
    frames = random_frames(5, seed=57)
    want = expected_actions(local_policy, frames)
    with PolicyClient(server.address) as c, c.session() as session:
        for i in range(3):
            np.testing.assert_allclose(session.step(frames[i]), want[i], rtol=1e-4, atol=1e-5)
        time.sleep(0.6)
        assert server.active_streams == 0  # closed by the server meanwhile
        for i in range(3, 5):
            np.testing.assert_allclose(session.step(frames[i]), want[i], rtol=1e-4, atol=1e-5)
        assert session.reconnects == 1


def test_a_fleet_version_client_follows_an_upgrade_but_not_a_new_contract(start_server, tmp_path):
    """version= chooses a version, not a file: other weights with the same contract take over the
    session (a rolling upgrade); a policy with another frame stack cannot."""
    server = start_server()
    port = server.port
    upgrade = build_tiny_policy(tmp_path / "upgrade.onnx", seed=8)
    other_k = build_tiny_policy(tmp_path / "k4.onnx", frame_stack=4)
    frames = random_frames(4, seed=58)
    with (
        PolicyClient(server.address, version="v1", backoff_initial=0.02, backoff_max=0.2) as c,
        c.session() as session,
    ):
        session.step(frames[0])
        server.stop(grace=0)
        server = start_server(port=port, model=upgrade)
        session.step(frames[1])
        np.testing.assert_allclose(
            session.last.action, OnnxPolicy(upgrade, device="cpu").act(np.stack(frames[[0, 0, 1]])), atol=1e-5
        )
        server.stop(grace=0)
        start_server(port=port, model=other_k)
        with pytest.raises(PolicyChangedError, match="frame_stack changed"):
            session.step(frames[2])
