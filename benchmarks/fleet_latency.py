"""Latency and throughput of the fleet (Ray Serve, 1 and 2 replicas) next to semore-serve, in one run.

All three serve the same exported tiny test policy on loopback and are driven by the same load
generator, serve_latency.py's: N concurrent robots (StreamAct streams from an asyncio client in
a separate process), each step timed from write to read. For each server and N in 1, 8 and 32:
per-step p50/p99 and aggregate frames/s. ``fleet_over_serve_p50`` is the fleet's (1 replica)
single-robot p50 over semore-serve's: what Ray Serve's proxy hop costs a lone robot.

Every server gets the same compute: semore-serve one ONNX Runtime thread, each fleet replica one
CPU (hence one thread). Ray runs on this machine (``semore-fleet up`` in the foreground), so the
2-replica fleet shares the cores with its proxy and the load generator, as semore-serve does.

    python benchmarks/fleet_latency.py            # writes benchmarks/results/fleet_latency.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import serve_latency  # noqa: E402  (its server start/stop and its load generator)

from tests.helpers.fleet import free_port, start_local_fleet  # noqa: E402
from tests.helpers.serving import build_tiny_policy  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "fleet_latency.json"
ROBOTS = (1, 8, 32)


def measure_levels(target: str, frames: int, warmup: int) -> list[dict]:
    return [serve_latency.measure_concurrent(target, n, frames, warmup, workers=1) for n in ROBOTS]


def with_semore_serve(model: Path, run: Callable[[str], list[dict]]) -> list[dict]:
    proc, address = serve_latency.start_server(model, "cpu", ["--threads", "1"])
    try:
        return run(address)
    finally:
        serve_latency.stop_server(proc)


def with_fleet(model: Path, replicas: int, log: Path, run: Callable[[str], list[dict]]) -> list[dict]:
    """A fresh local fleet of ``replicas`` one-CPU replicas (a rescale would roll them: Serve
    would start the new ones next to the old, and two cores hold no more)."""
    fleet = start_local_fleet(
        log,
        "--model",
        str(model),
        "--num-cpus",
        "1",
        "--replicas",
        str(replicas),
        "--grpc-port",
        str(free_port()),
    )
    try:
        return run(fleet.target)
    finally:
        fleet.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames-per-robot", type=int, default=200, help="measured steps per robot and level")
    p.add_argument("--warmup", type=int, default=20, help="unmeasured steps per robot first")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)

    def run(target: str) -> list[dict]:
        return measure_levels(target, args.frames_per_robot, args.warmup)

    load_before = os.getloadavg()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_policy(Path(tmp) / "tiny_policy.onnx")
        servers = {
            "semore-serve": with_semore_serve(model, run),
            "fleet, 1 replica": with_fleet(model, 1, Path(tmp) / "fleet1.log", run),
            "fleet, 2 replicas": with_fleet(model, 2, Path(tmp) / "fleet2.log", run),
        }
    load_after = os.getloadavg()

    single = {name: levels[0]["p50_ms"] for name, levels in servers.items()}
    result = {
        "benchmark": "fleet_latency",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        # The load average shows what else ran on the cores meanwhile.
        "machine": f"{os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}",
        "loadavg_1m": {"before": round(load_before[0], 2), "after": round(load_after[0], 2)},
        "model": "tiny test policy (tests/helpers/serving.py), CPU",
        "load_generator": "benchmarks/serve_latency.py measure_concurrent: StreamAct, 1 client process",
        "frames_per_robot": args.frames_per_robot,
        "servers": servers,
        "fleet_over_serve_p50": round(single["fleet, 1 replica"] / single["semore-serve"], 3),
        "fleet_2_replicas_over_serve_p50": round(single["fleet, 2 replicas"] / single["semore-serve"], 3),
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"\nsame tiny policy, same load generator, {os.cpu_count()} CPUs")
    print(f"load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f}\n")
    print(f"{'server':<20}{'robots':>7}{'p50 ms':>9}{'p99 ms':>9}{'frames/s':>10}{'batch':>7}")
    print("-" * 62)
    for name, levels in servers.items():
        for level in levels:
            print(
                f"{name:<20}{level['streams']:>7}{level['p50_ms']:>9.2f}{level['p99_ms']:>9.2f}"
                f"{level['frames_per_s']:>10.0f}{level['mean_batch_size']:>7.1f}"
            )
    print("-" * 62)
    print(f"fleet_over_serve_p50 (1 robot, 1 replica): {result['fleet_over_serve_p50']:.2f}")
    print(f"wrote {args.out} in {result['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
