"""Hostile frames against a real server: decompression bombs leave its memory flat, one client's
slow frames do not slow another's, and every refused frame is counted by its reason."""

from __future__ import annotations

import statistics
import threading
import time
import urllib.request
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pytest

from semore_runtime.proto_gen.semore.v1 import policy_pb2, policy_pb2_grpc
from serve.decode import MAX_DECODE_PIXELS
from serve.server import build_server
from tests.helpers.serving import encoded, png_bomb, raw_frame

Frame = policy_pb2.Frame
MB = 1024 * 1024
# Its own TCP connection, so the server sees it as its own client (gRPC shares one by default).
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


def vm_bytes(pid: int, field: str) -> int:
    """A memory figure of process ``pid`` from /proc/<pid>/status (VmRSS: now, VmHWM: its peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def png_act(frames: list[np.ndarray]) -> policy_pb2.ActRequest:
    return policy_pb2.ActRequest(frames=[Frame(data=encoded(f, "PNG"), encoding=Frame.PNG) for f in frames])


def test_bombs_leave_the_server_memory_flat(start_cli_server, spec):
    """100 PNGs of 130 KB that declare 4096x4096 RGBA16 (128 MiB each), 4 at a time: each is
    refused from its header, and the server's RSS, peak included, grows by less than 100 MB
    (before the header check: 112 MB -> 1.3 GB for 20 of them, never given back)."""
    proc, address = start_cli_server("--resize")
    bomb = Frame(data=png_bomb(), encoding=Frame.PNG)
    request = policy_pb2.ActRequest(frames=[bomb] * spec.frame_stack)

    def send(_: int) -> tuple[grpc.StatusCode, str]:
        try:
            stub.Act(request, timeout=30)
        except grpc.RpcError as exc:
            return exc.code(), exc.details()
        return grpc.StatusCode.OK, ""

    with grpc.insecure_channel(address) as channel:
        stub = policy_pb2_grpc.PolicyServiceStub(channel)
        stub.GetSpec(policy_pb2.GetSpecRequest(), timeout=10)
        rss_before = vm_bytes(proc.pid, "VmRSS")
        t0 = time.perf_counter()
        with futures.ThreadPoolExecutor(4) as senders:
            answers = list(senders.map(send, range(100)))
        seconds = time.perf_counter() - t0
    growth = vm_bytes(proc.pid, "VmRSS") - rss_before
    peak_growth = vm_bytes(proc.pid, "VmHWM") - rss_before
    print(
        f"\n100 bombs in {seconds:.2f} s: RSS {rss_before / MB:.0f} MB, +{growth / MB:.1f} MB, peak +{peak_growth / MB:.1f} MB"
    )
    limit = f"frames[0]: frame is 4096x4096 = 16777216 pixels, over the limit of {MAX_DECODE_PIXELS} pixels"
    assert all(code == grpc.StatusCode.INVALID_ARGUMENT and limit in details for code, details in answers), (
        answers[0]
    )
    assert growth < 100 * MB and peak_growth < 100 * MB


def test_a_client_with_slow_frames_does_not_slow_another(start_cli_server, spec, random_frames):
    """One client keeps 4 Acts of 4K PNGs (the largest --resize decodes, ~130 ms each) in flight;
    another's small-PNG Act stays near its unloaded latency. With one first-come-first-served
    pool it waited behind the whole queue (2.7 ms -> 1.17 s in the bug report)."""
    proc, address = start_cli_server("--resize")
    slow = png_act([np.zeros((2160, 3840, 3), np.uint8)] * spec.frame_stack)
    good = png_act(list(random_frames(spec.frame_stack, seed=41)))
    stop = threading.Event()
    slow_acts = []

    with (
        grpc.insecure_channel(address, options=OWN_CONNECTION) as good_channel,
        grpc.insecure_channel(address, options=OWN_CONNECTION) as slow_channel,
    ):
        good_stub = policy_pb2_grpc.PolicyServiceStub(good_channel)
        slow_stub = policy_pb2_grpc.PolicyServiceStub(slow_channel)

        def good_p50(n: int) -> float:
            seconds = []
            for _ in range(n):
                t0 = time.perf_counter()
                good_stub.Act(good, timeout=30)
                seconds.append(time.perf_counter() - t0)
            return statistics.median(seconds)

        def flood() -> None:
            while not stop.is_set():
                slow_acts.append(slow_stub.Act(slow, timeout=120).server_us / 1e6)

        good_p50(5)  # connection and first calls
        unloaded = good_p50(40)
        flooders = [threading.Thread(target=flood) for _ in range(4)]
        for t in flooders:
            t.start()
        try:
            while not slow_acts:  # the slow client's frames are in the pool
                time.sleep(0.05)
            loaded = good_p50(40)
            still_busy = all(t.is_alive() for t in flooders)
        finally:
            stop.set()
            for t in flooders:
                t.join(120)
    print(
        f"\ngood PNG Act p50: unloaded {unloaded * 1e3:.2f} ms, loaded {loaded * 1e3:.2f} ms "
        f"({loaded / unloaded:.1f}x); slow client's Act p50 {statistics.median(slow_acts) * 1e3:.0f} ms "
        f"({len(slow_acts)} done)"
    )
    assert still_busy
    assert loaded < max(5 * unloaded, 0.015) and loaded < 0.050


def test_refused_frames_are_counted_by_reason(start_server, spec, random_frames):
    server = start_server(resize=True, metrics_port=0)
    good = random_frames(1, seed=42)[0]
    png = bytearray(encoded(good, "PNG"))
    png[-1] ^= 0x01  # IEND's CRC
    refused = {
        "too_large": Frame(data=png_bomb(), encoding=Frame.PNG),
        "checksum": Frame(data=bytes(png), encoding=Frame.PNG),
        "sample_format": Frame(data=png_bomb(spec.height, spec.width), encoding=Frame.PNG),
        "malformed": Frame(
            data=good.tobytes()[:-1], height=spec.height, width=spec.width, encoding=Frame.RAW_RGB8
        ),
    }
    with grpc.insecure_channel(server.address) as channel:
        stub = policy_pb2_grpc.PolicyServiceStub(channel)
        for frame in refused.values():
            request = policy_pb2.ActRequest(frames=[frame] + [raw_frame(good)] * (spec.frame_stack - 1))
            with pytest.raises(grpc.RpcError) as info:
                stub.Act(request, timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    body = (
        urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read().decode()
    )
    for reason in refused:
        assert f'semore_refused_frames_total{{reason="{reason}"}} 1.0' in body


def test_max_decode_pixels_must_be_positive(policy_path):
    with pytest.raises(ValueError, match="max_decode_pixels\n  Input should be greater than or equal to 1"):
        build_server(model=policy_path, port=0, max_decode_pixels=0)


GARBAGE = b"\xff\xff\xff\xff not a protobuf message"


@pytest.mark.parametrize("method", ["GetSpec", "Act", "StreamAct"])
def test_bytes_that_are_no_message_are_invalid_argument(server, stub, method, spec, random_frames):
    """Raw bytes through a channel with identity serializers: the caller's error, not UNKNOWN."""
    with grpc.insecure_channel(server.address) as channel:
        path = f"/semore.v1.PolicyService/{method}"
        with pytest.raises(grpc.RpcError) as info:
            if method == "StreamAct":
                next(channel.stream_stream(path)(iter([GARBAGE]), timeout=5))
            else:
                channel.unary_unary(path)(GARBAGE, timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid protobuf message" in info.value.details()
    # The server is unharmed.
    frames = [raw_frame(f) for f in random_frames(spec.frame_stack, seed=61)]
    assert len(stub.Act(policy_pb2.ActRequest(frames=frames), timeout=5).action) == spec.action_dim
