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
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import torch

from devkit.batches import synthetic_batches
from devkit.update_timing import update_seconds
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
    configs = {
        name: load_config(ROOT / "configs/quickstart.yaml", [*CARTPOLE, *overrides])
        for name, overrides in ARMS.items()
    }
    agents = {}
    for name, config in configs.items():
        torch.manual_seed(0)
        agents[name] = make_agent(config, 1, torch.device("cpu"))
    times = update_seconds(agents, synthetic_batches(configs, 1), args.rounds, args.updates)
    # The first round warms up; each later round gives its mean update time.
    median = {
        name: float(np.median(np.reshape(s, (-1, args.updates))[1:].mean(1))) for name, s in times.items()
    }
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
