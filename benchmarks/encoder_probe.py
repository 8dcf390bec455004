"""State probe: how fast does each encoder learn to read cartpole's state from pixels, supervised?

A diagnostic for the learner check (docs/results.md): RL mixes the encoder's capacity with
exploration and bootstrapping, so this takes the RL out. Frames from random actions on
dm_control cartpole balance at the quickstart settings (48 px, 3 frames, action repeat 4) are
paired with the simulator's state: cart position x, cos and sin of the pole angle, and both
velocities (standardised). Each encoder, freshly initialised as training would, plus a linear
head, is trained to regress the state (Adam at the quickstart's learning rate, batch 64, random
shifts), and the held-out R^2 of each variable is read along the way. Same frames, same batches
and the same seeds for every encoder; one thread.

A variant with `augment.composite` adds composited views to each batch as training does (the
simulator's foreground mask keeps the bodies, a moving texture of the training families replaces
the sky and floor) and regresses the same state from them: how much the composited views slow
what the encoder learns from clean frames, without an RL trial. It also reads the R^2 on the
held-out frames composited over textures the training never drew (new ones of the training
families, never an evaluation family).

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
from training.backgrounds import procedural_backgrounds, training_backgrounds
from training.composite import Compositor
from training.config import RunConfig, load_config
from training.envs import make_env
from training.networks import make_encoder, preprocess

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs/quickstart.yaml"
# The dual-path variants leave out the gate: only the teacher's foreground loss trains it, and
# this probe trains on the state alone.
SEMORE = ["encoder.gate=false", "augment.composite=0"]
VARIANTS = {
    "pixel": ["encoder.kind=pixel", "encoder.gate=false", "augment.composite=0"],
    "pixel, composite": ["encoder.kind=pixel", "encoder.gate=false"],
    "semore": SEMORE,
    "semore, semantic_input=stack": [*SEMORE, "encoder.semantic_input=stack"],
    "semore, motion_path=full": [*SEMORE, "encoder.motion_path=full"],
    "semore, knowledge_attention=false": [*SEMORE, "encoder.knowledge_attention=false"],
}
STATE = ["x", "cos", "sin", "x_dot", "theta_dot"]
READ_AT = (100, 250, 500, 1000, 2000, 4000)
BATCH = 64


def collect(frames: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Frame stacks [N, K, H, W, 3] uint8 from random actions, each frame's foreground [N, K, H, W]
    (what is not sky or floor) and the standardised state [N, 5]."""
    env = make_env(load_config(CONFIG).env, seed)
    rng = np.random.default_rng(seed)
    stacks, foregrounds, states = [], [], []

    def reset() -> list[np.ndarray]:
        env.reset()  # the stack repeats the first frame, and so does its mask
        return [~env.background_mask()] * env.config.frame_stack

    masks = reset()
    while len(stacks) < frames:
        step = env.step(env.from_unit(rng.uniform(-1, 1, env.action_dim)))
        if step.last:
            masks = reset()
            continue
        masks = [*masks[1:], ~env.background_mask()]
        qpos, qvel = env.physics.data.qpos, env.physics.data.qvel
        stacks.append(step.stack.copy())
        foregrounds.append(np.stack(masks))
        states.append([qpos[0], np.cos(qpos[1]), np.sin(qpos[1]), qvel[0], qvel[1]])
    y = torch.as_tensor(np.array(states), dtype=torch.float32)
    x, fg = torch.as_tensor(np.stack(stacks)), torch.as_tensor(np.stack(foregrounds))
    return x, fg, (y - y.mean(0)) / y.std(0)


def compositor(config: RunConfig, textures: np.ndarray) -> Compositor:
    return Compositor(textures, config.env.image_size, config.augment.texture_speed, torch.device("cpu"))


def r2(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return 1 - ((predicted - target) ** 2).mean(0) / target.var(0)


def probe(overrides: list[str], x: torch.Tensor, fg: torch.Tensor, y: torch.Tensor, steps: int) -> list[dict]:
    """Held-out R^2 per state variable at each of READ_AT (up to `steps`), on the clean frames and
    (keys `composited <variable>`) on the same frames composited over unseen textures."""
    config = load_config(CONFIG, overrides)
    size, augment = config.env.image_size, config.augment
    split = int(0.8 * len(x))
    held_out, clean_frames = y[split:], preprocess(x[split:])
    torch.manual_seed(0)  # the same unseen composites for every variant
    unseen = compositor(config, procedural_backgrounds(augment.textures, 2 * size, seed=10_000))
    composited_frames = unseen(clean_frames, fg[split:].float())
    adding = None
    if augment.composite > 0:
        adding = compositor(config, training_backgrounds(augment.backgrounds, 2 * size, augment.textures, 0))
    torch.manual_seed(1)
    encoder = make_encoder(config.encoder, config.env.frame_stack, size)
    head = torch.nn.Linear(encoder.feature_dim, len(STATE))
    optimizer = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=config.agent.lr)
    batches = torch.Generator().manual_seed(2)
    curve = []
    for step in range(1, steps + 1):
        index = torch.randint(0, split, (BATCH,), generator=batches)
        frames, mask = random_shift(preprocess(x[index]), fg[index].float(), pad=config.agent.augment_pad)
        target = y[index]
        if adding is not None:  # as the learner adds them: views of the first rows, same targets
            m = max(1, round(augment.composite * BATCH))
            frames = torch.cat([frames, adding(frames[:m], mask[:m])])
            target = torch.cat([target, target[:m]])
        loss = F.mse_loss(head(encoder(frames).feature), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step in READ_AT or step == steps:
            point: dict = {"step": step}
            with torch.no_grad():
                for prefix, held in (("", clean_frames), ("composited ", composited_frames)):
                    predicted = torch.cat(
                        [head(encoder(held[i : i + 256]).feature) for i in range(0, len(held), 256)]
                    )
                    point |= {
                        prefix + n: round(float(r), 3)
                        for n, r in zip(STATE, r2(predicted, held_out), strict=True)
                    }
            curve.append(point)
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
    x, fg, y = collect(args.frames, args.seed)
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
            "curve": probe(VARIANTS[name], x, fg, y, args.steps),
        }
        print(f"{name}: {time.perf_counter() - started:.0f} s", flush=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"\n{'variant':<34} {'step':>5} "
        + " ".join(f"{n:>9}" for n in STATE)
        + "  (composited, unseen textures)"
    )
    for name, entry in results["variants"].items():
        for point in entry["curve"]:
            # A record kept from an earlier run may hold clean reads only.
            composited = [point.get(f"composited {n}") for n in STATE]
            print(
                f"{name:<34} {point['step']:>5} "
                + " ".join(f"{point[n]:>9.3f}" for n in STATE)
                + ("  " + " ".join(f"{c:>6.3f}" for c in composited) if None not in composited else "")
            )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
