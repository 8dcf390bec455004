"""Health transitions, graceful shutdown on SIGTERM/SIGINT (a real subprocess), and CLI errors."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devkit.tiny_policy import build_tiny_policy
from semore_runtime.proto_gen.semore.v1 import policy_pb2, policy_pb2_grpc
from serve.cli import parse_args
from serve.server import ServeConfig, build_server
from tests.helpers.serving import expected_actions, raw_frame, start_cli

ROOT = Path(__file__).resolve().parents[2]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def test_health_transitions(policy_path, spec, random_frames):
    server = build_server(model=policy_path, port=0, device="cpu", threads=1)
    server.start_listening()
    try:
        with grpc.insecure_channel(server.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", "semore.v1.PolicyService"):
                assert (
                    health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
                    == NOT_SERVING
                )
            # Not ready: policy calls are refused, not queued.
            stub = policy_pb2_grpc.PolicyServiceStub(channel)
            frame = raw_frame(random_frames(1, seed=30)[0])
            with pytest.raises(grpc.RpcError) as info:
                stub.Act(policy_pb2.ActRequest(frames=[frame] * spec.frame_stack), timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE and "warming up" in info.value.details()

            watch = health.Watch(health_pb2.HealthCheckRequest(service="semore.v1.PolicyService"), timeout=20)
            assert next(watch).status == NOT_SERVING
            server.warm_up_and_serve()
            assert next(watch).status == SERVING
            assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == SERVING
            act = policy_pb2.ActRequest(frames=[frame] * spec.frame_stack)
            assert len(stub.Act(act, timeout=5).action) == spec.action_dim

            stopper = threading.Thread(target=server.stop, kwargs={"grace": 5.0})
            t0 = time.monotonic()
            stopper.start()
            assert next(watch).status == NOT_SERVING
            stopper.join(10)
            # No policy work was open, so the drain did not sit out the grace for the Watch stream.
            assert time.monotonic() - t0 < 3.0
    finally:
        server.stop(grace=0)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_drains_in_flight_stream_then_exits_0(
    policy_path, local_policy, tmp_path, signum, random_frames
):
    proc, address = start_cli(policy_path, tmp_path / "server.log", "--drain-timeout", "20")
    try:
        frames = random_frames(40, seed=31)
        want = expected_actions(local_policy, frames)
        requests: queue.SimpleQueue = queue.SimpleQueue()
        with grpc.insecure_channel(address) as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=30)
            assert next(watch).status == SERVING
            call = policy_pb2_grpc.PolicyServiceStub(channel).StreamAct(iter(requests.get, None), timeout=30)
            observations = [policy_pb2.Observation(seq=i, frame=raw_frame(f)) for i, f in enumerate(frames)]
            got = []
            for obs in observations[:5]:  # a stream mid-episode...
                requests.put(obs)
                got.append(next(call))
            for obs in observations[5:30]:  # ...with 25 observations in flight when the signal lands
                requests.put(obs)
            proc.send_signal(signum)
            for _ in range(25):
                got.append(next(call))
            assert next(watch).status == NOT_SERVING  # the drain has begun, with this stream open
            for obs in observations[30:]:  # ...and the stream keeps working during the drain
                requests.put(obs)
                got.append(next(call))
            requests.put(None)
            assert list(call) == []
            assert call.code() == grpc.StatusCode.OK
        assert [a.seq for a in got] == list(range(40))
        np.testing.assert_allclose(np.array([a.action for a in got]), want, rtol=1e-4, atol=1e-5)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    events = [
        json.loads(line).get("event") for line in (tmp_path / "server.log").read_text().splitlines() if line
    ]
    assert "serving" in events and "draining" in events and "stopped" in events
    # The drain began while the stream was still open, and the stream then closed normally.
    assert events.index("draining") < events.index("stream_closed") < events.index("stopped")


def test_second_signal_cuts_the_drain_short(policy_path, tmp_path, random_frames):
    proc, address = start_cli(policy_path, tmp_path / "server.log", "--drain-timeout", "60")
    try:
        requests: queue.SimpleQueue = queue.SimpleQueue()
        with grpc.insecure_channel(address) as channel:
            call = policy_pb2_grpc.PolicyServiceStub(channel).StreamAct(iter(requests.get, None), timeout=30)
            requests.put(policy_pb2.Observation(seq=1, frame=raw_frame(random_frames(1, seed=32)[0])))
            assert next(call).seq == 1
            proc.send_signal(signal.SIGTERM)  # the open stream would hold the drain for 60 s...
            time.sleep(0.5)
            assert proc.poll() is None
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)  # ...a second signal cancels it
            assert proc.wait(timeout=10) == 0
            assert time.monotonic() - t0 < 5
            with pytest.raises(grpc.RpcError):
                next(call)
            requests.put(None)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


BAD_MODELS = {  # case -> (writes the file, what the one error line says)
    "not a model": (lambda path: path.write_bytes(b"not a model"), "not a loadable ONNX model"),
    "spec does not fit the graph": (
        lambda path: build_tiny_policy(
            path, spec_overrides={"action_dim": 3, "action_low": [-1.0] * 3, "action_high": [1.0] * 3}
        ),
        "action_dim: the spec says 3, the graph's action has 2",
    ),
    "spec beyond the limits": (
        lambda path: build_tiny_policy(
            path, spec_overrides={"height": 30000, "width": 30000, "frame_stack": 64}
        ),
        "height: the spec says 30000, the limit is 1024",
    ),
}


@pytest.mark.parametrize("case", list(BAD_MODELS))
def test_cli_rejects_a_bad_model(tmp_path, case):
    write, message = BAD_MODELS[case]
    bad = tmp_path / "bad.onnx"
    write(bad)
    result = subprocess.run(
        [sys.executable, "-m", "serve", "--model", str(bad), "--port", "0", "--device", "cpu"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    records = [json.loads(line) for line in result.stderr.splitlines()]  # JSON lines only: no traceback
    (error,) = [r for r in records if r["level"] == "error"]
    assert error["event"] == "startup_failed" and message in error["msg"]


def test_a_taken_port_fails_at_build(server, policy_path):
    with pytest.raises(OSError, match="cannot bind"):
        build_server(model=policy_path, port=server.port, device="cpu")


def test_cli_options_come_from_serve_config(capsys):
    assert parse_args(["--model", "p.onnx"])[0] == ServeConfig(model=Path("p.onnx"))
    argv = ["--model", "p.onnx", "--device", "cpu", "--tls-cert", "c.pem", "--tls-key", "k.pem"]
    argv += ["--threads", "2", "--spin", "--no-inline", "--drain-timeout", "2.5", "--log-level", "debug"]
    config, logging_options = parse_args(argv)
    assert (config.device, config.tls_cert, config.threads) == ("cpu", Path("c.pem"), 2)
    assert config.spinning and not config.inline_when_alone and config.drain_timeout_s == 2.5
    assert logging_options.log_level == "debug"
    with pytest.raises(SystemExit):
        parse_args(["--model", "p.onnx", "--device", "tpu"])  # choices from the Literal
    # A bad value exits as argparse does, naming the option and the rule.
    for bad, message in (
        (["--batch-wait-us", "-1"], "--batch-wait-us: Input should be greater than or equal to 0"),
        (["--tls-cert", "c.pem"], "--tls-cert and --tls-key go together"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            parse_args(["--model", "p.onnx", *bad])
        assert exit_info.value.code == 2
        assert f"semore-serve: error: {message}" in capsys.readouterr().err
