"""Update time of the gate's two places against the pixel baseline, side by side in one process.

The quickstart settings on a synthetic batch (devkit.batches), one thread, the arms interleaved
round by round so a loaded machine slows each alike; the figure is the ratio to pixel's median.

    python -m benchmarks.gate_update_time     # writes benchmarks/results/gate_update_time.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import torch

from devkit.batches import synthetic_batch
from training.agent import make_agent
from training.config import load_config

ROOT = Path(__file__).resolve().parents[1]
CARTPOLE = ["env.id=dmc:cartpole-balance", "teacher.objects=[cart, pole_1]"]
ARMS = {
    "pixel": ["encoder.kind=pixel", "encoder.gate=false", "augment.composite=0"],
    "semore, gate at the features": [],
    "semore, gate at the input": ["encoder.gate_at=input"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--updates", type=int, default=10)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/gate_update_time.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    agents, batches = {}, {}
    for name, overrides in ARMS.items():
        config = load_config(ROOT / "configs/quickstart.yaml", [*CARTPOLE, *overrides])
        torch.manual_seed(0)
        agents[name] = make_agent(config, 1, torch.device("cpu"))
        batches[name] = synthetic_batch(config, 1, np.random.default_rng(0))
    seconds: dict[str, list[float]] = {name: [] for name in ARMS}
    for _ in range(args.rounds):
        for name in ARMS:
            start = time.perf_counter()
            for _ in range(args.updates):
                agents[name].update(batches[name], frames=0)
            seconds[name].append((time.perf_counter() - start) / args.updates)
    median = {name: float(np.median(s[1:])) for name, s in seconds.items()}  # round 1 warms up
    result = {
        "what": "one update at the quickstart settings (composite 0.5 for semore), median of rounds after the first",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, 1 torch thread",
        "ms": {name: round(m * 1e3, 1) for name, m in median.items()},
        "ratio_to_pixel": {name: round(m / median["pixel"], 2) for name, m in median.items()},
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for name in ARMS:
        print(f"{name:30s} {result['ms'][name]:7.1f} ms  {result['ratio_to_pixel'][name]:.2f}x pixel")


if __name__ == "__main__":
    main()
