"""Bearer-token auth (on and off), TLS with a self-signed certificate, and mutual TLS."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from semore_runtime.client import AuthenticationError
from semore_runtime.proto_gen.semore.v1 import policy_pb2, policy_pb2_grpc
from semore_runtime.tokens import read_tokens
from serve.security import TokenFile
from serve.server import build_server
from tests.helpers.serving import StreamDriver, make_certs, make_self_signed, raw_frame

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
TOKEN = "s3cret-token-for-tests"


@pytest.fixture
def act_request(spec, random_frames) -> policy_pb2.ActRequest:
    return policy_pb2.ActRequest(frames=[raw_frame(f) for f in random_frames(spec.frame_stack, seed=20)])


@pytest.fixture
def stream_once(random_frames):
    """``stream_once(stub, metadata=None)``: one observation on a new stream, its Action back."""
    obs = policy_pb2.Observation(seq=1, frame=raw_frame(random_frames(1, seed=21)[0]))

    def call(stub, metadata=None) -> policy_pb2.Action:
        return next(iter(stub.StreamAct(iter([obs]), metadata=metadata, timeout=5)))

    return call


@pytest.fixture
def auth_server(start_server, tmp_path):
    token_file = tmp_path / "tokens"
    token_file.write_text(f"# accepted tokens\nold-token\n{TOKEN}\n")
    return start_server(token_file=token_file)


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        (None, "missing"),
        ((("authorization", "Bearer wrong"),), "invalid bearer token"),
        ((("authorization", TOKEN),), "invalid bearer token"),  # no scheme
        ((("authorization", f"Basic {TOKEN}"),), "invalid bearer token"),
    ],
    ids=["none", "wrong", "no-scheme", "basic"],
)
def test_auth_rejects(auth_server, act_request, stream_once, metadata, message):
    with grpc.insecure_channel(auth_server.address) as channel:
        stub = policy_pb2_grpc.PolicyServiceStub(channel)
        for call in (
            lambda: stub.GetSpec(policy_pb2.GetSpecRequest(), metadata=metadata, timeout=5),
            lambda: stub.Act(act_request, metadata=metadata, timeout=5),
            lambda: stream_once(stub, metadata),
        ):
            with pytest.raises(grpc.RpcError) as info:
                call()
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert message in info.value.details()


def test_auth_accepts_any_listed_token_and_leaves_health_open(auth_server, spec, act_request, stream_once):
    with grpc.insecure_channel(auth_server.address) as channel:
        stub = policy_pb2_grpc.PolicyServiceStub(channel)
        for token in (TOKEN, "old-token"):
            metadata = (("authorization", f"Bearer {token}"),)
            got = stub.GetSpec(policy_pb2.GetSpecRequest(), metadata=metadata, timeout=5)
            assert got.frame_stack == spec.frame_stack
            assert len(stub.Act(act_request, metadata=metadata, timeout=5).action) == spec.action_dim
            assert stream_once(stub, metadata).seq == 1
        health = health_pb2_grpc.HealthStub(channel)
        status = health.Check(
            health_pb2.HealthCheckRequest(service="semore.v1.PolicyService"), timeout=5
        ).status
        assert status == health_pb2.HealthCheckResponse.SERVING


def test_auth_off_needs_no_token(server, spec, act_request, stream_once):
    with grpc.insecure_channel(server.address) as channel:
        stub = policy_pb2_grpc.PolicyServiceStub(channel)
        assert len(stub.Act(act_request, timeout=5).action) == spec.action_dim
        assert stream_once(stub).seq == 1
        # A token sent to a server without auth is simply ignored.
        assert stream_once(stub, (("authorization", "Bearer whatever"),)).seq == 1


@needs_openssl
def test_tls_with_self_signed_certificate(
    start_server, tmp_path, local_policy, spec, random_frames, stream_once
):
    cert, key = make_self_signed(tmp_path / "tls")
    server = start_server(tls_cert=cert, tls_key=key)
    creds = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
    frames = random_frames(spec.frame_stack, seed=22)
    with grpc.secure_channel(server.address, creds) as channel:
        stub = policy_pb2_grpc.PolicyServiceStub(channel)
        action = stub.Act(policy_pb2.ActRequest(frames=[raw_frame(f) for f in frames]), timeout=10)
        np.testing.assert_allclose(action.action, local_policy.act(frames), rtol=1e-4, atol=1e-5)
        assert stream_once(stub).seq == 1
    # A plaintext client cannot talk to the TLS port.
    with grpc.insecure_channel(server.address) as channel, pytest.raises(grpc.RpcError) as info:
        policy_pb2_grpc.PolicyServiceStub(channel).GetSpec(policy_pb2.GetSpecRequest(), timeout=3)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    # Nor can a client that does not trust the certificate.
    other_cert, _ = make_self_signed(tmp_path / "other")
    untrusted = grpc.ssl_channel_credentials(root_certificates=other_cert.read_bytes())
    with grpc.secure_channel(server.address, untrusted) as channel, pytest.raises(grpc.RpcError) as info:
        policy_pb2_grpc.PolicyServiceStub(channel).GetSpec(policy_pb2.GetSpecRequest(), timeout=3)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


@needs_openssl
def test_mutual_tls_and_token_together(start_server, tmp_path, stream_once):
    certs = make_certs(tmp_path / "mtls")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    server = start_server(
        tls_cert=certs["server.pem"],
        tls_key=certs["server.key"],
        client_ca=certs["ca.pem"],
        token_file=token_file,
    )
    ca = certs["ca.pem"].read_bytes()
    with_client_cert = grpc.ssl_channel_credentials(
        root_certificates=ca,
        private_key=certs["client.key"].read_bytes(),
        certificate_chain=certs["client.pem"].read_bytes(),
    )
    metadata = (("authorization", f"Bearer {TOKEN}"),)
    with grpc.secure_channel(server.address, with_client_cert) as channel:
        stub = policy_pb2_grpc.PolicyServiceStub(channel)
        assert stream_once(stub, metadata).seq == 1
        with pytest.raises(grpc.RpcError) as info:
            stream_once(stub)  # a certificate is not a token
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    without_client_cert = grpc.ssl_channel_credentials(root_certificates=ca)
    with (
        grpc.secure_channel(server.address, without_client_cert) as channel,
        pytest.raises(grpc.RpcError) as info,
    ):
        policy_pb2_grpc.PolicyServiceStub(channel).GetSpec(
            policy_pb2.GetSpecRequest(), metadata=metadata, timeout=3
        )
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_config_errors(policy_path):
    with pytest.raises(ValueError, match="go together"):
        build_server(model=policy_path, port=0, device="cpu", tls_cert=policy_path)
    with pytest.raises(ValueError, match="needs --tls-cert"):
        build_server(model=policy_path, port=0, device="cpu", client_ca=policy_path)


def test_token_file_is_reloaded_when_it_changes_and_streams_stay_open(
    auth_server, random_frames, stream_once
):
    token_file = auth_server.config.token_file
    old = (("authorization", f"Bearer {TOKEN}"),)
    new = (("authorization", "Bearer rotated-token"),)
    with grpc.insecure_channel(auth_server.address) as channel:
        stub = policy_pb2_grpc.PolicyServiceStub(channel)
        driver = StreamDriver(stub, metadata=old)
        obs = policy_pb2.Observation(seq=1, frame=raw_frame(random_frames(1, seed=23)[0]))
        assert driver.step(obs).seq == 1
        token_file.write_text("# rotated\n\nrotated-token\n")
        assert stream_once(stub, new).seq == 1
        with pytest.raises(grpc.RpcError) as info:
            stream_once(stub, old)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert driver.step(obs).seq == 1  # the stream opened with the old token goes on
        # A file broken mid-edit keeps the tokens it had.
        token_file.write_text("# nothing yet\n")
        assert stream_once(stub, new).seq == 1
        driver.close()


def test_check_token_is_the_one_check(tmp_path):
    token_file = tmp_path / "tokens"
    token_file.write_text("  # comment\n\n first \nsecond\n")
    tokens = TokenFile(token_file)
    tokens.check_token([("authorization", "Bearer first")])
    tokens.check_token([("authorization", "bearer second")])
    with pytest.raises(AuthenticationError, match="missing"):
        tokens.check_token([])
    with pytest.raises(AuthenticationError, match="invalid"):
        tokens.check_token([("authorization", "Bearer # comment")])
    assert read_tokens(token_file) == ["first", "second"]


def test_sighup_reloads_the_token_file(start_cli_server, tmp_path, stream_once):
    token_file = tmp_path / "tokens"
    token_file.write_text("token-aaaa\n")
    proc, address = start_cli_server("--token-file", str(token_file))
    stamp = token_file.stat()
    # Same size, same mtime: only the signal can make the server read it again.
    token_file.write_text("token-bbbb\n")
    os.utime(token_file, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    with grpc.insecure_channel(address) as channel:
        stub = policy_pb2_grpc.PolicyServiceStub(channel)
        assert stream_once(stub, (("authorization", "Bearer token-aaaa"),)).seq == 1
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while True:
            try:
                assert stream_once(stub, (("authorization", "Bearer token-bbbb"),)).seq == 1
                break
            except grpc.RpcError:
                assert time.monotonic() < deadline, "SIGHUP did not reload the token file"
                time.sleep(0.05)
        assert proc.poll() is None  # SIGHUP does not stop the server


def test_a_non_loopback_bind_without_tls_or_token_warns(start_server, caplog, tmp_path):
    caplog.set_level(logging.WARNING, logger="serve.server")
    start_server()  # loopback: nothing to warn about
    assert not [r for r in caplog.records if getattr(r, "event", None) == "insecure_bind"]
    server = start_server(host="0.0.0.0")
    (record,) = [r for r in caplog.records if getattr(r, "event", None) == "insecure_bind"]
    assert record.levelno == logging.WARNING and record.missing == ["TLS", "a token file"]
    assert "without TLS or a token file" in record.getMessage() and server.address in record.getMessage()


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)")
def test_ipv6_literal_host(start_server, spec, stream_once):
    server = start_server(host="::1")
    assert server.address == f"[::1]:{server.port}"
    with grpc.insecure_channel(server.address) as channel:
        stub = policy_pb2_grpc.PolicyServiceStub(channel)
        assert stub.GetSpec(policy_pb2.GetSpecRequest(), timeout=5).frame_stack == spec.frame_stack
        assert stream_once(stub).seq == 1
