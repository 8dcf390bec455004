"""Latency and throughput of the fleet (Ray Serve, 1 and 2 replicas) next to semore-serve, in one run.

All three serve the same exported tiny test policy on loopback and are driven by the same load
generator, serve_latency.py's: N concurrent robots (StreamAct streams from an asyncio client in
a separate process), each step timed from write to read. For each server and N in 1, 8 and 32:
per-step p50/p99 and aggregate frames/s. ``fleet_over_serve_p50`` is the fleet's (1 replica)
single-robot p50 over semore-serve's: what Ray Serve's ingress hop costs a lone robot. Both run at
once, and their single-robot p50s are measured in ``--rounds`` alternating rounds: the ratio is
the median over the rounds, since this machine's speed drifts within a run.

Every server gets the same compute: semore-serve one ONNX Runtime thread, each fleet replica one
CPU (hence one thread). Ray runs on this machine (``semore-fleet up`` in the foreground), so the
2-replica fleet shares the cores with its proxy and the load generator, as semore-serve does.

    python -m benchmarks.fleet_latency            # writes benchmarks/results/fleet_latency.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

from benchmarks import serve_latency  # its server start/stop and its load generator
from devkit.fleet import free_port, start_local_fleet
from devkit.tiny_policy import build_tiny_policy

ROOT = Path(__file__).resolve().parents[1]

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "fleet_latency.json"
ROBOTS = (1, 8, 32)


def measure_levels(target: str, frames: int, warmup: int) -> list[dict]:
    return [serve_latency.measure_concurrent(target, n, frames, warmup, workers=1) for n in ROBOTS]


def single_robot_ratios(
    serve_target: str, fleet_target: str, rounds: int, frames: int, warmup: int
) -> list[float]:
    """Fleet p50 / semore-serve p50 for one robot, in alternating rounds."""
    ratios = []
    for _ in range(rounds):
        serve_p50 = serve_latency.measure_concurrent(serve_target, 1, frames, warmup, workers=1)["p50_ms"]
        fleet_p50 = serve_latency.measure_concurrent(fleet_target, 1, frames, warmup, workers=1)["p50_ms"]
        ratios.append(round(fleet_p50 / serve_p50, 3))
    return ratios


T = TypeVar("T")


def with_semore_serve(model: Path, run: Callable[[str], T]) -> T:
    proc, address = serve_latency.start_server(model, "cpu", ["--threads", "1"])
    try:
        return run(address)
    finally:
        serve_latency.stop_server(proc)


def with_fleet(model: Path, replicas: int, log: Path, run: Callable[[str], T]) -> T:
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
    p.add_argument("--rounds", type=int, default=8, help="alternating single-robot rounds for the ratio")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    frames, warmup = args.frames_per_robot, args.warmup

    def run(target: str) -> list[dict]:
        return measure_levels(target, frames, warmup)

    load_before = os.getloadavg()
    started = time.perf_counter()
    servers: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_policy(Path(tmp) / "tiny_policy.onnx")

        def beside_serve(serve_target: str) -> list[float]:
            def beside_fleet(fleet_target: str) -> list[float]:
                ratios = single_robot_ratios(serve_target, fleet_target, args.rounds, frames, warmup)
                servers["semore-serve"], servers["fleet, 1 replica"] = run(serve_target), run(fleet_target)
                return ratios

            return with_fleet(model, 1, Path(tmp) / "fleet1.log", beside_fleet)

        ratios = with_semore_serve(model, beside_serve)
        servers["fleet, 2 replicas"] = with_fleet(model, 2, Path(tmp) / "fleet2.log", run)
    load_after = os.getloadavg()

    single = {name: levels[0]["p50_ms"] for name, levels in servers.items()}
    result = {
        "benchmark": "fleet_latency",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        # The load average shows what else ran on the cores meanwhile.
        "machine": f"{os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}",
        "loadavg_1m": {"before": round(load_before[0], 2), "after": round(load_after[0], 2)},
        "model": "tiny test policy (devkit/tiny_policy.py), CPU",
        "load_generator": "benchmarks.serve_latency measure_concurrent: StreamAct, 1 client process",
        "frames_per_robot": args.frames_per_robot,
        "servers": servers,
        "fleet_over_serve_p50": round(float(np.median(ratios)), 3),
        "fleet_over_serve_p50_rounds": ratios,
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
    print(
        f"fleet_over_serve_p50 (1 robot, 1 replica, median of {args.rounds} alternating rounds): "
        f"{result['fleet_over_serve_p50']:.2f} (rounds: {', '.join(map(str, ratios))})"
    )
    print(f"wrote {args.out} in {result['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
