"""Fair limits: health and reflection never take policy slots, calls without a token take nothing,
silent streams are closed, and one client cannot take every stream slot."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from pydantic import ValidationError

from semore_runtime.options import problems
from semore_runtime.proto_gen.semore.v1 import policy_pb2, policy_pb2_grpc
from serve.limits import StreamLimitError, StreamSlots, client_address
from serve.server import MAX_SIDE_STREAMS, MAX_SIDE_STREAMS_PER_CLIENT, ServeConfig
from tests.helpers.serving import StreamDriver, raw_frame, wait_until

TOKEN = "limits-test-token"
BEARER = (("authorization", f"Bearer {TOKEN}"),)


@pytest.fixture
def observation(random_frames) -> policy_pb2.Observation:
    return policy_pb2.Observation(seq=1, frame=raw_frame(random_frames(1, seed=60)[0]))


def first_status(watch) -> grpc.StatusCode:
    """OK once a health watch answered SERVING, else the code it was refused with."""
    try:
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_health_and_reflection_take_no_stream_slot_and_have_their_own_cap(start_server, observation):
    server = start_server(max_streams=1)
    with grpc.insecure_channel(server.address) as channel:
        stub = policy_pb2_grpc.PolicyServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        assert "semore.v1.PolicyService" in ProtoReflectionDescriptorDatabase(channel).get_services()
        # Health watches up to this client's cap, and one more...
        watches = [
            health.Watch(health_pb2.HealthCheckRequest()) for _ in range(MAX_SIDE_STREAMS_PER_CLIENT + 1)
        ]
        codes = [first_status(watch) for watch in watches]
        assert codes.count(grpc.StatusCode.OK) == MAX_SIDE_STREAMS_PER_CLIENT
        assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 1
        # ...and the one policy slot is still free; with it taken, health answers once a watch ends.
        driver = StreamDriver(stub)
        assert driver.step(observation).seq == 1
        assert server.active_streams == 1
        for watch in watches:
            watch.cancel()
        assert wait_until(lambda: server.side_calls.open == 0)
        status = health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING
        driver.close()


def test_calls_without_a_token_do_not_lock_out_a_robot(start_server, tmp_path, observation):
    token_file = tmp_path / "tokens"
    token_file.write_text(TOKEN + "\n")
    server = start_server(token_file=token_file, max_streams=2)
    with grpc.insecure_channel(server.address) as channel:
        stub = policy_pb2_grpc.PolicyServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        # 320 attempts without a token, all open at once: half StreamAct, half health watches.
        refused = [stub.StreamAct(iter([observation])) for _ in range(160)]
        watches = [health.Watch(health_pb2.HealthCheckRequest()) for _ in range(160)]
        assert {first_status(watch) for watch in watches} == {
            grpc.StatusCode.OK,
            grpc.StatusCode.RESOURCE_EXHAUSTED,  # beyond their own cap per client
        }
        driver = StreamDriver(stub, metadata=BEARER)
        assert driver.step(observation).seq == 1
        for call in refused:
            with pytest.raises(grpc.RpcError) as info:
                next(call)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert server.active_streams == 1  # none of the refused calls ever held a slot
        driver.close()
        for watch in watches:
            watch.cancel()


def test_a_silent_stream_is_closed_after_the_idle_timeout(start_server, observation):
    server = start_server(idle_timeout_s=0.3)
    with grpc.insecure_channel(server.address) as channel:
        driver = StreamDriver(policy_pb2_grpc.PolicyServiceStub(channel))
        assert driver.step(observation).seq == 1
        with pytest.raises(grpc.RpcError) as info:
            next(driver.call)  # sends nothing more: the server ends the stream
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "--idle-timeout" in info.value.details()
        assert wait_until(lambda: server.active_streams == 0)
        # A stream that keeps sending is not idle, however long it lives.
        busy = StreamDriver(policy_pb2_grpc.PolicyServiceStub(channel))
        for seq in range(1, 8):
            assert busy.step(policy_pb2.Observation(seq=seq, frame=observation.frame)).seq == seq
            wait_until(lambda: False, timeout=0.1)
        busy.close()


def test_one_client_cannot_take_every_stream(start_server, observation):
    server = start_server(max_streams=4)  # per client: half, 2
    channels = [grpc.insecure_channel(server.address) for _ in range(3)]
    try:
        drivers = [StreamDriver(policy_pb2_grpc.PolicyServiceStub(c)) for c in channels[:2]]
        for driver in drivers:
            assert driver.step(observation).seq == 1
        # A third connection from the same address gets no more slots.
        third = StreamDriver(policy_pb2_grpc.PolicyServiceStub(channels[2]))
        with pytest.raises(grpc.RpcError) as info:
            third.step(observation)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--max-streams-per-client" in info.value.details()
        drivers[0].close()
        assert wait_until(lambda: server.active_streams == 1)
        again = StreamDriver(policy_pb2_grpc.PolicyServiceStub(channels[2]))
        assert again.step(observation).seq == 1
        again.close()
        drivers[1].close()
    finally:
        for channel in channels:
            channel.close()


def test_client_address_drops_the_port():
    assert client_address("ipv4:10.0.0.7:51234") == "ipv4:10.0.0.7"
    assert client_address("ipv6:[::1]:51234") == "ipv6:[::1]"
    assert client_address("unix:/tmp/socket") == "unix:/tmp/socket"


@pytest.mark.parametrize(
    ("field", "value", "flag"),
    [
        ("max_streams_per_client", 0, "--max-streams-per-client"),
        ("idle_timeout_s", 0, "--idle-timeout"),
        ("max_message_bytes", 0, "--max-message-bytes"),
        ("max_message_bytes", -1, "--max-message-bytes"),
    ],
)
def test_limit_options_are_validated(policy_path, field, value, flag):
    with pytest.raises(ValidationError, match=field) as error:
        ServeConfig(model=policy_path, **{field: value})
    assert flag in problems(ServeConfig, error.value)


def test_idle_health_watches_never_lock_out_a_health_check(start_server, tmp_path):
    """An attacker's idle, unauthenticated Watch streams must not fail an orchestrator's liveness probe."""
    token_file = tmp_path / "tokens"
    token_file.write_text(TOKEN + "\n")
    server = start_server(token_file=token_file)
    with grpc.insecure_channel(server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        watches = [health.Watch(health_pb2.HealthCheckRequest()) for _ in range(MAX_SIDE_STREAMS)]
        codes = [first_status(watch) for watch in watches]
        assert codes.count(grpc.StatusCode.OK) == MAX_SIDE_STREAMS_PER_CLIENT
        for _ in range(3):
            status = health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
            assert status == health_pb2.HealthCheckResponse.SERVING
        for watch in watches:
            watch.cancel()


def test_slots_cap_overall_and_per_client_and_name_their_limit():
    slots = StreamSlots(3, 2, ("open health and reflection streams",) * 2)
    a1, a2 = slots.try_open("ipv4:10.0.0.1:1000"), slots.try_open("ipv4:10.0.0.1:1001")
    with pytest.raises(StreamLimitError, match=r"^ipv4:10.0.0.1 already has its limit of 2 open health"):
        slots.try_open("ipv4:10.0.0.1:1002")
    slots.try_open("ipv4:10.0.0.2:1000")
    with pytest.raises(StreamLimitError, match=r"^the server already serves its limit of 3 open health"):
        slots.try_open("ipv4:10.0.0.3:1000")
    assert slots.close(a1) and not slots.close(a1)
    slots.try_open("ipv4:10.0.0.1:1003")
    assert len(slots) == 3 and slots.close(a2)
