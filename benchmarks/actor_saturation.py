"""Actor saturation: is a DrQ-v2 checkpoint's deterministic actor stuck past tanh?

A diagnostic for flat evaluation curves with the DrQ-v2 learner (docs/results.md, "DrQ-v2 learner
at the reference settings"). For states from the run's own replay buffer it reads the actor's
pre-tanh mean action (|x| > 3: tanh passes under 1% of the gradient) and the critic's value of
each action on a grid over [-1, 1], averaged over the states, with the action the critic
prefers (the median over states of its best grid action). A saturated actor acting at one bound
while its critic prefers another is stuck, not converged. Runs whose update log predates the
`actor_pre_tanh` column can be read this way too. Needs each run's checkpoint.pt and replay.npz.

    python -m benchmarks.actor_saturation RUN_DIR [RUN_DIR ...] [--states 250]

Writes benchmarks/results/actor_saturation.json (one record per run folder; runs not read this
time keep their earlier record) and prints a table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from training.agent import make_agent
from training.checkpoint import CHECKPOINT_NAME, REPLAY_NAME, Checkpoint, CheckpointError
from training.networks import preprocess

ROOT = Path(__file__).resolve().parents[1]
GRID = torch.linspace(-1.0, 1.0, 9)


def read_run(run: Path, states: int) -> dict:
    checkpoint = Checkpoint.load(run / CHECKPOINT_NAME)
    config = checkpoint.config.model_copy(update={"device": "cpu"})
    if config.agent.kind != "drqv2":
        raise SystemExit(f"{run}: agent.kind is {config.agent.kind}; this reads DrQ-v2's actor")
    config.encoder.compile = False
    replay = np.load(run / REPLAY_NAME)
    agent = make_agent(config, replay["actions"].shape[1], torch.device("cpu"))
    agent.load_state_dict(checkpoint.agent)
    frames, k = replay["frames"], config.env.frame_stack
    size = min(int(replay["size"]), len(frames))
    index = np.linspace(k - 1, size - 1, min(states, size - k + 1)).astype(int)
    stacks = np.stack([frames[i - k + 1 : i + 1] for i in index])
    with torch.no_grad():
        feature = agent.encoder(preprocess(torch.as_tensor(stacks))).feature
        pre_tanh = agent.actor.pre_tanh(feature)
        q = torch.stack(
            [torch.min(*agent.critic(feature, a.expand(len(feature), pre_tanh.shape[1]))) for a in GRID]
        ).reshape(len(GRID), len(feature))  # value of each grid action in each state
    return {
        "env": config.env.id,
        "lr": config.agent.lr,
        "frames": checkpoint.frames,
        "states": len(index),
        "pre_tanh_mean": round(pre_tanh.mean().item(), 2),
        "pre_tanh_min": round(pre_tanh.min().item(), 2),
        "pre_tanh_max": round(pre_tanh.max().item(), 2),
        "saturated_fraction": round((pre_tanh.abs() > 3).float().mean().item(), 3),
        "critic_value_by_action": {
            f"{a:+.2f}": round(v, 2) for a, v in zip(GRID.tolist(), q.mean(1).tolist(), strict=True)
        },
        "critic_preferred_action": float(GRID[q.argmax(0)].median()),
    }


def run_name(run: Path) -> str:
    """The folder relative to the repository, or its own name outside it (no machine's paths)."""
    run = run.resolve()
    return str(run.relative_to(ROOT)) if run.is_relative_to(ROOT) else run.name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="training output folders")
    parser.add_argument("--states", type=int, default=250, help="replay states read per run")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/actor_saturation.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results.setdefault("what", __doc__.splitlines()[0])
    runs = results.setdefault("runs", {})
    print(
        f"{'run':<60} {'frames':>7} {'pre-tanh mean [min, max]':>26} {'saturated':>9} {'critic prefers':>14}"
    )
    for run in args.runs:
        try:
            record = read_run(run, args.states)
        except (FileNotFoundError, CheckpointError) as exc:
            raise SystemExit(f"actor_saturation: {exc}") from None
        runs[run_name(run)] = record
        spread = f"{record['pre_tanh_mean']} [{record['pre_tanh_min']}, {record['pre_tanh_max']}]"
        print(
            f"{run_name(run):<60} {record['frames']:>7} {spread:>26} {record['saturated_fraction']:>9.0%} "
            f"{record['critic_preferred_action']:>+14.2f}"
        )
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
