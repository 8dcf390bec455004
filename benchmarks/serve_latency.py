"""Serving latency and throughput of semore-serve on loopback, against the in-process floor.

Measures, in one run:
  * in-process ``OnnxPolicy.act`` on one stack: the floor any server adds to;
  * single-stream StreamAct round trip through ``PolicyClient.session().step`` (what a robot
    runs): p50/p99 and frames/s;
  * the physical floor of that round trip: a plain grpcio echo server answering the same
    StreamAct messages (no decode, no model, a canned Action) to a client in PolicyClient's style
    (grpc's sync API, requests fed through a queue). ``overhead_over_echo`` = (PolicyClient p50 -
    in-process p50) / echo p50: how many bare gRPC round trips the serving stack costs;
  * aggregate frames/s and per-step p99 at several concurrent streams (1, 8, 32, 64 by default),
    driven by a lean asyncio load generator in a separate process, so that the client's own
    CPU cost (on the same cores as the server here) distorts the server's figure as little as possible.

Targets on the 2-core development CPU: single-stream p50 <= in-process p50 + 0.5 ms, and
aggregate throughput at 32 streams >= 2x single stream; ``overhead_over_echo`` <= 1.3, judged on
the median of ``--runs`` whole measurements (it moves with the machine's load). Results go to
benchmarks/results/serve_latency.json (the median run in full, and every run's single-stream
figures under ``runs``) and a printed table.

    python -m benchmarks.serve_latency --runs 5        # builds the tiny test policy (writes the results file)
    python -m benchmarks.serve_latency --model policy.onnx --device cpu
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from devkit.timing import percentiles
from devkit.tiny_policy import build_tiny_policy
from semore_runtime.client import PolicyClient
from semore_runtime.frame_stack import FrameStack
from semore_runtime.policy import OnnxPolicy

ROOT = Path(__file__).resolve().parents[1]

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "serve_latency.json"
OVERHEAD_TARGET_MS = 0.5
RATIO_TARGET = 2.0
OVERHEAD_OVER_ECHO_TARGET = 1.3


def test_frames(policy_spec, n: int = 64, seed: int = 0) -> np.ndarray:
    h, w, c = policy_spec.frame_shape
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, c), dtype=np.uint8)


# -- in-process floor ----------------------------------------------------------------------------


def measure_in_process(model: Path, device: str, n: int, warmup: int) -> dict:
    policy = OnnxPolicy(model, device=device)  # OnnxPolicy's defaults: what a robot would run in-process
    frames = test_frames(policy.spec)
    stack = FrameStack(policy.spec.frame_stack, policy.spec.frame_shape)
    stacks = [stack.push(frames[i % len(frames)]) for i in range(len(frames))]
    for i in range(warmup):
        policy.act(stacks[i % len(stacks)])
    times = []
    for i in range(n):
        s = stacks[i % len(stacks)]
        t0 = time.perf_counter()
        policy.act(s)
        times.append(time.perf_counter() - t0)
    return {**percentiles(times), "n": n, "provider": policy.provider, "spec": policy.spec}


# -- the server ----------------------------------------------------------------------------------


def start_server(model: Path, device: str, extra: list[str]) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "serve", "--model", str(model), "--port", "0", "--device", device]
    cmd += ["--log-level", "warning", *extra]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True
    )
    line = proc.stdout.readline()
    if not line.startswith("SERVING "):
        proc.kill()
        raise SystemExit(f"semore-serve did not start ({' '.join(cmd)}): {line!r}")
    return proc, line.split()[1]


def stop_server(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


# -- single stream through PolicyClient ------------------------------------------------------------


def measure_single_stream(address: str, n: int, warmup: int) -> dict:
    with PolicyClient(address) as client:
        frames = test_frames(client.spec())
        with client.session() as session:
            for i in range(warmup):
                session.step(frames[i % len(frames)])
            times, server_us, inference_us = [], [], []
            t_start = time.perf_counter()
            for i in range(n):
                frame = frames[i % len(frames)]
                t0 = time.perf_counter()
                session.step(frame)
                times.append(time.perf_counter() - t0)
                server_us.append(session.last.server_us)
                inference_us.append(session.last.inference_us)
            total = time.perf_counter() - t_start
    return {
        **percentiles(times),
        "n": n,
        "frames_per_s": round(n / total, 1),
        "server_side_p50_ms": round(float(np.median(server_us)) / 1e3, 4),
        "server_inference_p50_ms": round(float(np.median(inference_us)) / 1e3, 4),
    }


# -- the physical floor: a plain grpcio echo of the same messages ----------------------------------


def _echo_server(action_dim: int, ready) -> None:
    """A grpc.aio server (like semore-serve) whose StreamAct answers each Observation at once."""
    import grpc

    from semore_runtime.proto_gen.semore.v1 import policy_pb2, policy_pb2_grpc

    class Echo(policy_pb2_grpc.PolicyServiceServicer):
        async def StreamAct(self, request_iterator, context):
            async for obs in request_iterator:
                yield policy_pb2.Action(seq=obs.seq, action=[0.0] * action_dim, batch_size=1)

    async def serve() -> None:
        server = grpc.aio.server()
        policy_pb2_grpc.add_PolicyServiceServicer_to_server(Echo(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        ready.put(port)
        await server.wait_for_termination()

    asyncio.run(serve())


def measure_echo(spec, n: int, warmup: int) -> dict:
    """Round trips of StreamAct messages of the policy's size to the echo server, client in
    PolicyClient's style: grpc's sync API, a request queue, one ``next`` per step."""
    import queue

    import grpc

    from semore_runtime.proto_gen.semore.v1 import policy_pb2, policy_pb2_grpc

    ctx = mp.get_context("spawn")
    ready = ctx.Queue()
    proc = ctx.Process(target=_echo_server, args=(spec.action_dim, ready), daemon=True)
    proc.start()
    try:
        port = ready.get(timeout=60)
        h, w, _ = spec.frame_shape
        wires = [
            policy_pb2.Frame(data=f.tobytes(), height=h, width=w, encoding=policy_pb2.Frame.RAW_RGB8)
            for f in test_frames(spec)
        ]
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            requests: queue.SimpleQueue = queue.SimpleQueue()
            call = policy_pb2_grpc.PolicyServiceStub(channel).StreamAct(iter(requests.get, None))
            times = []
            for i in range(warmup + n):
                obs = policy_pb2.Observation(seq=i, frame=wires[i % len(wires)])
                t0 = time.perf_counter()
                requests.put(obs)
                next(call)
                if i >= warmup:
                    times.append(time.perf_counter() - t0)
            requests.put(None)
    finally:
        proc.terminate()
        proc.join(10)
    return {**percentiles(times), "n": n}


# -- concurrent streams: an asyncio load generator in worker processes -----------------------------


async def _drive_streams(address: str, n_streams: int, n_frames: int, warmup: int, start_at: float):
    import grpc

    from semore_runtime.proto_gen.semore.v1 import policy_pb2, policy_pb2_grpc

    async with grpc.aio.insecure_channel(address) as channel:
        stub = policy_pb2_grpc.PolicyServiceStub(channel)
        spec = await stub.GetSpec(policy_pb2.GetSpecRequest())
        frames = np.random.default_rng(1).integers(0, 256, (16, spec.height, spec.width, 3), dtype=np.uint8)
        wires = [
            policy_pb2.Frame(
                data=f.tobytes(), height=spec.height, width=spec.width, encoding=policy_pb2.Frame.RAW_RGB8
            )
            for f in frames
        ]
        calls = [stub.StreamAct() for _ in range(n_streams)]
        for call in calls:  # open and warm every stream before the clock starts
            for i in range(warmup):
                await call.write(policy_pb2.Observation(seq=i, frame=wires[i % 16], reset=i == 0))
                await call.read()
        await asyncio.sleep(max(0.0, start_at - time.time()))

        async def run(call) -> tuple[list[float], list[int], float, float]:
            lat, batch = [], []
            t_first = time.perf_counter()
            for i in range(n_frames):
                obs = policy_pb2.Observation(seq=warmup + i, frame=wires[i % 16])
                t0 = time.perf_counter()
                await call.write(obs)
                action = await call.read()
                lat.append(time.perf_counter() - t0)
                batch.append(action.batch_size)
            t_last = time.perf_counter()
            await call.done_writing()
            return lat, batch, t_first, t_last

        wall0 = time.time()
        perf0 = time.perf_counter()
        results = await asyncio.gather(*(run(c) for c in calls))
        # Report absolute start/end times so the parent can merge workers.
        starts = [wall0 + (r[2] - perf0) for r in results]
        ends = [wall0 + (r[3] - perf0) for r in results]
        return [x for r in results for x in r[0]], [x for r in results for x in r[1]], min(starts), max(ends)


def _worker(address: str, n_streams: int, n_frames: int, warmup: int, start_at: float, queue) -> None:
    try:
        queue.put(asyncio.run(_drive_streams(address, n_streams, n_frames, warmup, start_at)))
    except Exception as exc:  # surface worker failures in the parent
        queue.put(exc)


def measure_concurrent(address: str, n_streams: int, n_frames: int, warmup: int, workers: int) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    workers = max(1, min(workers, n_streams))
    shares = [n_streams // workers + (1 if i < n_streams % workers else 0) for i in range(workers)]
    start_at = time.time() + 2.0 + 0.02 * n_streams  # time for the workers to import and connect
    procs = [
        ctx.Process(target=_worker, args=(address, share, n_frames, warmup, start_at, queue))
        for share in shares
    ]
    for p in procs:
        p.start()
    results = [queue.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(30)
    for r in results:
        if isinstance(r, Exception):
            raise r
    lat = [x for r in results for x in r[0]]
    batch = [x for r in results for x in r[1]]
    t0, t1 = min(r[2] for r in results), max(r[3] for r in results)
    return {
        "streams": n_streams,
        "frames": len(lat),
        "frames_per_s": round(len(lat) / (t1 - t0), 1),
        **percentiles(lat),
        "mean_batch_size": round(float(np.mean(batch)), 2),
        "max_batch_size": int(np.max(batch)),
        "client_processes": workers,
    }


# -- main -----------------------------------------------------------------------------------------


def measure(args: argparse.Namespace, model: Path) -> dict:
    """One whole measurement: every figure of the results file, for one run."""
    load_before = os.getloadavg()
    floor = measure_in_process(model, args.device, args.frames, args.warmup)
    spec = floor.pop("spec")
    echo = measure_echo(spec, args.frames, args.warmup)
    proc, address = start_server(model, args.device, args.server_arg)
    try:
        single = measure_single_stream(address, args.frames, args.warmup)
        levels = [int(s) for s in args.streams.split(",") if s]
        concurrent = [
            measure_concurrent(address, c, args.frames_per_stream, 20, args.workers) for c in levels
        ]
    finally:
        exit_code = stop_server(proc)
    load_after = os.getloadavg()

    by_streams = {c["streams"]: c for c in concurrent}
    overhead = single["p50_ms"] - floor["p50_ms"]
    overhead_over_echo = overhead / echo["p50_ms"]
    ratio_32 = by_streams[32]["frames_per_s"] / single["frames_per_s"] if 32 in by_streams else None
    ratio_32_vs_1 = (
        by_streams[32]["frames_per_s"] / by_streams[1]["frames_per_s"]
        if 32 in by_streams and 1 in by_streams
        else None
    )
    return {
        "benchmark": "serve_latency",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "loadavg_1m_before": round(load_before[0], 2),
            "loadavg_1m_after": round(load_after[0], 2),
        },
        "model": {
            "path": str(args.model) if args.model else "tiny test policy (devkit/tiny_policy.py)",
            "stack_shape": list(spec.stack_shape),
            "action_dim": spec.action_dim,
            "device": args.device,
            "provider": floor.pop("provider"),
        },
        "server_args": args.server_arg,
        "in_process": floor,
        "echo": echo,
        "single_stream": single,
        "concurrent": concurrent,
        "single_stream_overhead_ms": round(overhead, 4),
        "overhead_over_echo": round(overhead_over_echo, 3),
        "throughput_ratio_32_streams": round(ratio_32, 2) if ratio_32 else None,
        "throughput_ratio_32_vs_1_streams_same_client": round(ratio_32_vs_1, 2) if ratio_32_vs_1 else None,
        "targets": {
            "single_stream_overhead_ms_max": OVERHEAD_TARGET_MS,
            "overhead_over_echo_max": OVERHEAD_OVER_ECHO_TARGET,
            "overhead_over_echo_met": overhead_over_echo <= OVERHEAD_OVER_ECHO_TARGET,
            "throughput_ratio_32_streams_min": RATIO_TARGET,
            "overhead_met": overhead <= OVERHEAD_TARGET_MS,
            "ratio_met": bool(ratio_32 and ratio_32 >= RATIO_TARGET),
        },
        "server_exit_code": exit_code,
    }


def run_figures(result: dict) -> dict:
    """What one run of several is remembered by: its single-stream figures, their floors, its load."""
    return {
        "timestamp": result["timestamp"],
        "loadavg_1m_before": result["machine"]["loadavg_1m_before"],
        "in_process_p50_ms": result["in_process"]["p50_ms"],
        "echo_p50_ms": result["echo"]["p50_ms"],
        "single_stream_p50_ms": result["single_stream"]["p50_ms"],
        "server_side_p50_ms": result["single_stream"]["server_side_p50_ms"],
        "server_inference_p50_ms": result["single_stream"]["server_inference_p50_ms"],
        "overhead_over_echo": result["overhead_over_echo"],
    }


def combine(results: list[dict]) -> dict:
    """The median run (by overhead_over_echo) in full, every run's figures in ``runs``, and the
    medians: one run moves with the machine's load, so the overhead target is judged on the median."""
    result = sorted(results, key=lambda r: r["overhead_over_echo"])[len(results) // 2]
    median = float(np.median([r["overhead_over_echo"] for r in results]))
    result["runs"] = [run_figures(r) for r in results]
    result["overhead_over_echo_median"] = round(median, 3)
    result["single_stream_p50_ms_median"] = round(
        float(np.median([r["single_stream"]["p50_ms"] for r in results])), 4
    )
    result["targets"]["overhead_over_echo_met"] = median <= OVERHEAD_OVER_ECHO_TARGET
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, help="policy .onnx (default: build the tiny test policy)")
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    p.add_argument("--frames", type=int, default=3000, help="single-stream and in-process measured steps")
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--streams", default="1,8,32,64", help="concurrency levels")
    p.add_argument("--frames-per-stream", type=int, default=300)
    p.add_argument("--workers", type=int, default=1, help="load-generator processes for concurrent streams")
    p.add_argument("--server-arg", action="append", default=[], help="extra semore-serve flag (repeatable)")
    p.add_argument(
        "--runs",
        type=int,
        default=1,
        help="whole measurements in a row; the results file keeps the median one",
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or build_tiny_policy(Path(tmp) / "tiny_policy.onnx")
        result = combine([measure(args, model) for _ in range(args.runs)])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    floor, echo, single = result["in_process"], result["echo"], result["single_stream"]
    concurrent, load = result["concurrent"], result["machine"]
    overhead, overhead_over_echo = result["single_stream_overhead_ms"], result["overhead_over_echo_median"]
    ratio_32, ratio_32_vs_1 = (
        result["throughput_ratio_32_streams"],
        result["throughput_ratio_32_vs_1_streams_same_client"],
    )
    where = f"{result['model']['path']}, stack {tuple(result['model']['stack_shape'])}, {os.cpu_count()} CPUs"
    print(f"\nsemore-serve on loopback, {where}")
    if args.runs > 1:
        ratios = ", ".join(f"{run['overhead_over_echo']:.2f}" for run in result["runs"])
        print(f"{args.runs} runs, overhead over echo: {ratios}; the table shows the median run")
    print(f"load average before/after: {load['loadavg_1m_before']:.2f} / {load['loadavg_1m_after']:.2f}\n")
    print(f"{'measurement':<34}{'p50 ms':>9}{'p99 ms':>9}{'frames/s':>11}{'batch':>7}")
    print("-" * 70)
    print(f"{'in-process OnnxPolicy.act':<34}{floor['p50_ms']:>9.3f}{floor['p99_ms']:>9.3f}{'':>11}{'':>7}")
    print(
        f"{'grpcio echo (no decode, no model)':<34}{echo['p50_ms']:>9.3f}{echo['p99_ms']:>9.3f}{'':>11}{'':>7}"
    )
    print(
        f"{'1 stream, PolicyClient session':<34}{single['p50_ms']:>9.3f}{single['p99_ms']:>9.3f}"
        f"{single['frames_per_s']:>11.0f}{'':>7}"
    )
    for c in concurrent:
        label = f"{c['streams']} streams (aggregate)"
        print(
            f"{label:<34}{c['p50_ms']:>9.3f}{c['p99_ms']:>9.3f}{c['frames_per_s']:>11.0f}{c['mean_batch_size']:>7.1f}"
        )
    print("-" * 70)
    verdict = "met" if result["targets"]["overhead_met"] else "MISSED"
    print(f"single-stream overhead (p50 - in-process p50): {overhead:.3f} ms (target <= 0.5: {verdict})")
    verdict = "met" if result["targets"]["overhead_over_echo_met"] else "MISSED"
    print(
        f"overhead over the echo floor ((p50 - in-process p50) / echo p50): {overhead_over_echo:.2f} "
        f"(target <= {OVERHEAD_OVER_ECHO_TARGET}: {verdict})"
    )
    if ratio_32:
        verdict = "met" if result["targets"]["ratio_met"] else "MISSED"
        print(f"throughput 32 streams / single stream: {ratio_32:.2f}x (target >= 2: {verdict})")
    if ratio_32_vs_1:
        print(f"throughput 32 streams / 1 stream, same load generator: {ratio_32_vs_1:.2f}x")
    print(f"server exit code after SIGTERM: {result['server_exit_code']}\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
