"""Update cost of each arm of a sweep spec, as a ratio to the spec's baseline arm.

Each arm's config is the one its trials train with (the spec's base, set, task and arm overrides);
its agent updates on a synthetic batch of that config's shapes (devkit.batches), with one torch
thread as a sweep trial runs, the arms timed side by side (devkit.update_timing). The figure is
each arm's median update time over the baseline's on the same task.

    python -m benchmarks.update_cost --spec sweeps/cpu_evidence_v2.yaml
    # writes benchmarks/results/update_cost_cpu_evidence_v2.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import torch

from devkit.batches import synthetic_batches
from devkit.update_timing import update_seconds
from evidence.spec import ROOT, load_spec
from training.agent import make_agent
from training.config import load_config
from training.envs import make_env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=ROOT / "sweeps/cpu_evidence_v2.yaml")
    parser.add_argument("--rounds", type=int, default=6, help="rounds; the first warms up and is left out")
    parser.add_argument("--updates", type=int, default=10, help="updates per arm per round")
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/update_cost_<spec name>.json")
    args = parser.parse_args()
    spec = load_spec(args.spec)
    out = args.out or ROOT / f"benchmarks/results/update_cost_{spec.name}.json"
    torch.set_num_threads(1)
    result: dict = {
        "what": f"one update of each arm of sweeps/{args.spec.name} on a synthetic batch, the median update time "
        f"after the first round, against the baseline arm {spec.baseline!r}",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, 1 torch thread",
        "loadavg_1m_before": round(os.getloadavg()[0], 2),
        "tasks": {},
    }
    for task, task_set in spec.tasks.items():
        configs = {
            arm: load_config(ROOT / spec.base, [*spec.set, *task_set, *arm_set, "device=cpu"])
            for arm, arm_set in spec.arms.items()
        }
        action_dim = make_env(next(iter(configs.values())).env, seed=0).action_dim
        agents = {}
        for arm, config in configs.items():
            torch.manual_seed(0)
            agents[arm] = make_agent(config, action_dim, torch.device("cpu"))
        times = update_seconds(agents, synthetic_batches(configs, action_dim), args.rounds, args.updates)
        median = {arm: statistics.median(t[args.updates :]) for arm, t in times.items()}
        result["tasks"][task] = {
            arm: {"ms": round(1e3 * m, 1), "ratio_to_baseline": round(m / median[spec.baseline], 2)}
            for arm, m in median.items()
        }
        for arm, entry in result["tasks"][task].items():
            print(
                f"{task} {arm:28s} {entry['ms']:7.1f} ms  {entry['ratio_to_baseline']:.2f}x {spec.baseline}"
            )
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
