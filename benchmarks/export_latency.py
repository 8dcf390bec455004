"""Inference latency: torch eager against ONNX Runtime, for the Semore and pixel encoders.

DrQ-v2 sized policies (84 px, frame stack 3, reference encoder width, hidden 1024), fresh
weights (latency does not depend on training). Torch and ORT calls alternate within each round so
both see the same machine noise. CPU always; ORT's CUDA provider as well when it runs here.
Writes benchmarks/results/export_latency.json and prints a table.

    python -m benchmarks.export_latency [--reps 200]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from export.onnx_export import policy_spec, to_onnx
from export.policy_graph import build_policy_graph
from semore_runtime.policy import DeviceUnavailableError, OnnxPolicy
from training.config import load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs/reference/cartpole_swingup.yaml"
ENCODERS = {"semore": [], "pixel": ["encoder.kind=pixel", "teacher.kind=none"]}
BATCHES = (1, 8, 64)


def percentile_ms(times: list[float], q: float) -> float:
    return round(1000 * float(np.percentile(times, q)), 4)


def measure(call, frames: np.ndarray, reps: int) -> list[float]:
    times = []
    for _ in range(reps):
        tic = time.perf_counter()
        call(frames)
        times.append(time.perf_counter() - tic)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--reps", type=int, default=200, help="calls per batch size and runtime (fewer at batch 64)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/export_latency.json")
    args = parser.parse_args()
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    results: dict = {"machine": f"{threads} CPU cores, torch {torch.__version__}", "encoders": {}}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind, extra in ENCODERS.items():
            config = load_config(CONFIG, ["device=cpu", "encoder.compile=false", *extra])
            torch.manual_seed(0)
            graph = build_policy_graph(config, [-1.0], [1.0])
            spec = policy_spec(config, [-1.0], [1.0])
            path = Path(tmp) / f"{kind}.onnx"
            path.write_bytes(to_onnx(graph, spec, opset=17, fp16=False))
            runtimes = {"ort_cpu": OnnxPolicy(path, device="cpu", threads=threads)}
            with contextlib.suppress(DeviceUnavailableError):  # no usable CUDA here: CPU only
                runtimes["ort_cuda"] = OnnxPolicy(path, device="cuda")

            def torch_eager(frames: np.ndarray, graph=graph) -> np.ndarray:
                with torch.inference_mode():
                    return graph(torch.from_numpy(frames)).numpy()

            entry: dict = {}
            rng = np.random.default_rng(0)
            for batch in BATCHES:
                frames = rng.integers(0, 256, (batch, *spec.stack_shape), dtype=np.uint8)
                reps = max(20, args.reps // (1 + batch // 8))
                calls = {"torch_eager": torch_eager} | {k: p.act for k, p in runtimes.items()}
                for call in calls.values():  # warm-up
                    measure(call, frames, 5)
                times: dict[str, list[float]] = {k: [] for k in calls}
                for _ in range(10):  # rounds alternate the runtimes
                    for name, call in calls.items():
                        times[name] += measure(call, frames, reps // 10)
                reference = torch_eager(frames)
                for name, ts in times.items():
                    p50 = percentile_ms(ts, 50)
                    row = {
                        "p50_ms": p50,
                        "p99_ms": percentile_ms(ts, 99),
                        "frames_per_s": round(1000 * batch / p50, 1),
                    }
                    if name != "torch_eager":
                        row["max_abs_diff"] = float(np.abs(calls[name](frames) - reference).max())
                    entry[f"{name}_b{batch}"] = row
                    rows.append((kind, name, batch, row))
            entry["ort_over_torch_batch1"] = round(
                entry["ort_cpu_b1"]["p50_ms"] / entry["torch_eager_b1"]["p50_ms"], 3
            )
            entry["max_abs_diff"] = max(
                v.get("max_abs_diff", 0.0) for v in entry.values() if isinstance(v, dict)
            )
            results["encoders"][kind] = entry
    results["ort_over_torch_batch1"] = results["encoders"]["semore"]["ort_over_torch_batch1"]
    results["max_abs_diff"] = results["encoders"]["semore"]["max_abs_diff"]
    results["cuda"] = any(k.startswith("ort_cuda") for k in results["encoders"]["semore"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")

    print(
        f"\n{'encoder':<7} {'runtime':<12} {'batch':>5} {'p50 ms':>8} {'p99 ms':>8} {'frames/s':>10} {'max|diff|':>10}"
    )
    for kind, name, batch, row in rows:
        diff = f"{row['max_abs_diff']:.1e}" if "max_abs_diff" in row else "-"
        print(
            f"{kind:<7} {name:<12} {batch:>5} {row['p50_ms']:>8.3f} {row['p99_ms']:>8.3f} {row['frames_per_s']:>10.1f} {diff:>10}"
        )
    for kind, entry in results["encoders"].items():
        print(f"{kind}: ORT / torch eager p50 at batch 1 = {entry['ort_over_torch_batch1']:.3f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
