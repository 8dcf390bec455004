"""In-process ONNX Runtime latency of a policy per batch size: OnnxPolicy.act, no server.

The floor under semore-serve's micro-batches: what one model call on B stacks costs on one
execution provider (uint8 stacks in, checked actions out; on CUDA the copies to and from the GPU
included). benchmarks.serve_latency measures batch 1 only, with its own frame stacks;
benchmarks/gpu_serve.sh runs this once per provider beside it.

    python -m benchmarks.ort_batch_latency --model policy.onnx --device cuda --batches 1 32 --out in_process.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from devkit.timing import percentiles
from semore_runtime.policy import OnnxPolicy

ROOT = Path(__file__).resolve().parents[1]


def measure(policy: OnnxPolicy, batch: int, reps: int, warmup: int, time_box: float) -> dict:
    """p50/p99 of `reps` calls on one random batch, or of those that fit in `time_box` seconds."""
    stacks = np.random.default_rng(batch).integers(0, 256, (batch, *policy.spec.stack_shape), dtype=np.uint8)
    for _ in range(warmup):
        policy.act(stacks)
    times: list[float] = []
    deadline = time.perf_counter() + time_box
    while len(times) < reps and (len(times) < 10 or time.perf_counter() < deadline):
        t0 = time.perf_counter()
        policy.act(stacks)
        times.append(time.perf_counter() - t0)
    return {**percentiles(times), "n": len(times), "frames_per_s": round(batch * len(times) / sum(times), 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True, help="policy .onnx")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    p.add_argument("--reps", type=int, default=1000, help="timed calls per batch size, at most")
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument(
        "--time-box", type=float, default=10.0, help="seconds of timed calls per batch size, at most"
    )
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)

    policy = OnnxPolicy(args.model, device=args.device)  # its defaults: what a robot runs in-process
    result = {
        "device": args.device,
        "provider": policy.provider,
        "onnxruntime": ort.__version__,
        "available_providers": ort.get_available_providers(),
        "stack_shape": list(policy.spec.stack_shape),
        "batches": {},
    }
    for batch in args.batches:
        row = measure(policy, batch, args.reps, args.warmup, args.time_box)
        result["batches"][str(batch)] = row
        args.out.write_text(json.dumps(result, indent=2) + "\n")  # each batch size as it comes
        print(
            f"in-process {policy.provider} batch {batch}: p50 {row['p50_ms']:.3f} ms, p99 {row['p99_ms']:.3f} ms"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
