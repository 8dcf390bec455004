"""State probe: how fast does each encoder learn to read cartpole's state from pixels, supervised?

A diagnostic for the learner check (docs/results.md): RL mixes the encoder's capacity with
exploration and bootstrapping, so this takes the RL out. Frames from random actions on
dm_control cartpole balance at the quickstart settings (48 px, 3 frames, action repeat 4) are
paired with the simulator's state: cart position x, cos and sin of the pole angle, and both
velocities (standardised). Each encoder, freshly initialised as training would, plus a linear
head, is trained to regress the state (Adam at the quickstart's learning rate, batch 64, random
shifts), and the held-out R^2 of each variable is read along the way. Same frames, same batches
and the same seeds for every encoder; one thread.

    python -m benchmarks.encoder_probe [--variants pixel semore ...] [--frames 3000] [--steps 1000]

Writes benchmarks/results/encoder_probe.json (variants not run this time keep their earlier
record there, when the setting is the same) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import torch
import torch.nn.functional as F

from training.augment import random_shift
from training.config import load_config
from training.envs import make_env
from training.networks import make_encoder, preprocess

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs/quickstart.yaml"
VARIANTS = {
    "pixel": ["encoder.kind=pixel", "teacher.kind=none"],
    "semore": [],
    "semore, semantic_input=stack": ["encoder.semantic_input=stack"],
    "semore, motion_path=full": ["encoder.motion_path=full"],
    "semore, knowledge_attention=false": ["encoder.knowledge_attention=false"],
}
STATE = ["x", "cos", "sin", "x_dot", "theta_dot"]
READ_AT = (100, 250, 500, 1000, 2000, 4000)
BATCH = 64


def collect(frames: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame stacks [N, K, H, W, 3] uint8 from random actions and the standardised state [N, 5]."""
    env = make_env(load_config(CONFIG).env, seed)
    rng = np.random.default_rng(seed)
    stacks, states = [], []
    env.reset()
    while len(stacks) < frames:
        step = env.step(env.from_unit(rng.uniform(-1, 1, env.action_dim)))
        if step.last:
            env.reset()
            continue
        qpos, qvel = env.physics.data.qpos, env.physics.data.qvel
        stacks.append(step.stack.copy())
        states.append([qpos[0], np.cos(qpos[1]), np.sin(qpos[1]), qvel[0], qvel[1]])
    y = torch.as_tensor(np.array(states), dtype=torch.float32)
    return torch.as_tensor(np.stack(stacks)), (y - y.mean(0)) / y.std(0)


def probe(overrides: list[str], x: torch.Tensor, y: torch.Tensor, steps: int) -> list[dict]:
    """Held-out R^2 per state variable at each of READ_AT (up to `steps`)."""
    config = load_config(CONFIG, overrides)
    torch.manual_seed(1)
    encoder = make_encoder(config.encoder, config.env.frame_stack, config.env.image_size)
    head = torch.nn.Linear(encoder.feature_dim, len(STATE))
    optimizer = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=config.agent.lr)
    batches = torch.Generator().manual_seed(2)
    split = int(0.8 * len(x))
    held_out = y[split:]
    curve = []
    for step in range(1, steps + 1):
        index = torch.randint(0, split, (BATCH,), generator=batches)
        (frames,) = random_shift(preprocess(x[index]), pad=config.agent.augment_pad)
        loss = F.mse_loss(head(encoder(frames).feature), y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step in READ_AT or step == steps:
            with torch.no_grad():
                predicted = torch.cat(
                    [head(encoder(preprocess(x[i : i + 256])).feature) for i in range(split, len(x), 256)]
                )
            r2 = 1 - ((predicted - held_out) ** 2).mean(0) / held_out.var(0)
            curve.append({"step": step, **{n: round(float(r), 3) for n, r in zip(STATE, r2, strict=True)}})
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument(
        "--frames", type=int, default=3000, help="frames collected (80%% train, 20%% held out)"
    )
    parser.add_argument("--steps", type=int, default=1000, help="training steps per encoder")
    parser.add_argument("--seed", type=int, default=0, help="env and action seed")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/encoder_probe.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    x, y = collect(args.frames, args.seed)
    results: dict = {
        "what": "held-out R^2 of a linear head on each encoder's feature, trained together to regress "
        "cartpole's state from pixels (supervised, no RL); one seed",
        "setting": f"{CONFIG.relative_to(ROOT)}, {args.frames} frames of random actions (seed {args.seed}), "
        f"batch {BATCH}, random shifts, Adam",
        "variants": {},
    }
    if args.out.exists():  # keep the variants not run this time, measured at the same setting
        earlier = json.loads(args.out.read_text())
        if earlier.get("setting") == results["setting"]:
            results["variants"] = earlier["variants"]
    for name in args.variants:
        started = time.perf_counter()
        results["variants"][name] = {
            "overrides": VARIANTS[name],
            "curve": probe(VARIANTS[name], x, y, args.steps),
        }
        print(f"{name}: {time.perf_counter() - started:.0f} s", flush=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n{'variant':<30} {'step':>5} " + " ".join(f"{n:>9}" for n in STATE))
    for name, entry in results["variants"].items():
        for point in entry["curve"]:
            print(f"{name:<30} {point['step']:>5} " + " ".join(f"{point[n]:>9.3f}" for n in STATE))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
