"""Training speed: Semore against the pixel baseline, at the reference and the quickstart settings.

Both encoders, each with the SAC learner and the DrQ-v2 learner, are timed side by side in one run
(rounds alternate between them, so machine noise hits all alike), on identical synthetic batches. Updates/s comes from the median update time;
env frames/s times collection as the trainer does it (render, plus the sim teacher's segmentation
render for Semore). Writes benchmarks/results/train_speed.json and prints a table.

    python benchmarks/train_speed.py [--rounds 5] [--updates 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.helpers: the synthetic batch the tests use too

import numpy as np  # noqa: E402
import torch  # noqa: E402

from tests.helpers.training import synthetic_batch  # noqa: E402
from training.agent import Agent, make_agent  # noqa: E402
from training.config import RunConfig, load_config  # noqa: E402
from training.envs import make_env  # noqa: E402
from training.teachers import make_teacher  # noqa: E402

SETTINGS = {
    "reference": ROOT / "configs/reference/cartpole_swingup.yaml",
    "quickstart": ROOT / "configs/quickstart.yaml",
}
PIXEL = ["encoder.kind=pixel", "teacher.kind=none"]
ENCODERS = {
    "semore": [],
    "pixel": PIXEL,
    "semore-drqv2": ["agent.kind=drqv2"],
    "pixel-drqv2": [*PIXEL, "agent.kind=drqv2"],
}


def configs(setting: str, compile_encoder: bool) -> dict[str, RunConfig]:
    common = ["device=cpu", f"encoder.compile={str(compile_encoder).lower()}"]
    return {kind: load_config(SETTINGS[setting], common + extra) for kind, extra in ENCODERS.items()}


def update_times(agents: dict[str, Agent], config: dict[str, RunConfig], rounds: int, updates: int) -> dict:
    rng = np.random.default_rng(0)
    batches = {k: synthetic_batch(c, agents[k].action_dim, rng) for k, c in config.items()}
    for kind, agent in agents.items():  # warm-up (and compilation when enabled)
        agent.update(batches[kind], frames=0)
        agent.update(batches[kind], frames=0)
    times: dict[str, list[float]] = {kind: [] for kind in agents}
    for _ in range(rounds):
        for kind, agent in agents.items():
            for _ in range(updates):
                tic = time.perf_counter()
                agent.update(batches[kind], frames=0)
                times[kind].append(time.perf_counter() - tic)
    return times


def env_frames_per_second(config: RunConfig, steps: int) -> float:
    env = make_env(config.env, seed=0)
    teacher = make_teacher(config.teacher, config.env.id, torch.device("cpu"))
    rng = np.random.default_rng(0)
    step = env.reset()
    tic = time.perf_counter()
    for _ in range(steps):
        step = env.step(rng.uniform(-1, 1, env.action_dim))
        if teacher is not None:
            teacher.annotate(env, step.frame)
        if step.last:
            step = env.reset()
    return steps * config.env.action_repeat / (time.perf_counter() - tic)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--updates", type=int, default=3, help="updates per encoder per round")
    parser.add_argument("--env-steps", type=int, default=200)
    parser.add_argument("--compile", action="store_true", help="torch.compile the encoders")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/train_speed.json")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)

    results: dict = {
        "machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} threads",
        "compile": args.compile,
        "settings": {},
    }
    rows = []
    for setting in SETTINGS:
        config = configs(setting, args.compile)
        agents = {kind: make_agent(c, 1, torch.device("cpu")) for kind, c in config.items()}
        times = update_times(agents, config, args.rounds, args.updates)
        entry = {}
        for kind, c in config.items():
            median = statistics.median(times[kind])
            entry[kind] = {
                "median_update_s": round(median, 4),
                "updates_per_s": round(1 / median, 2),
                "env_frames_per_s": round(env_frames_per_second(c, args.env_steps), 1),
                "batch_size": c.agent.batch_size,
                "image_size": c.env.image_size,
            }
            rows.append((setting, kind, entry[kind]))
        entry["semore_over_pixel"] = round(
            entry["semore"]["median_update_s"] / entry["pixel"]["median_update_s"], 3
        )
        entry["drqv2_over_sac_pixel"] = round(
            entry["pixel-drqv2"]["median_update_s"] / entry["pixel"]["median_update_s"], 3
        )
        results["settings"][setting] = entry
        results[f"semore_over_pixel_{setting}"] = entry["semore_over_pixel"]

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"\n{'setting':<11} {'encoder':<12} {'batch':>5} {'px':>4} {'update ms':>10} {'updates/s':>10} {'env frames/s':>13}"
    )
    for setting, kind, e in rows:
        print(
            f"{setting:<11} {kind:<12} {e['batch_size']:>5} {e['image_size']:>4} {1000 * e['median_update_s']:>10.1f} "
            f"{e['updates_per_s']:>10.2f} {e['env_frames_per_s']:>13.1f}"
        )
    for setting in SETTINGS:
        print(f"semore / pixel update time, {setting}: {results[f'semore_over_pixel_{setting}']:.3f}x")
        drqv2 = results["settings"][setting]["drqv2_over_sac_pixel"]
        print(f"drqv2 / sac update time (pixel encoder), {setting}: {drqv2:.3f}x")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
