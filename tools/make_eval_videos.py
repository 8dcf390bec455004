"""Writes benchmarks/data/eval_videos: background clips for `semore-eval --perturb video=DIR`.

An evaluation family that training never sees: the training textures (training/backgrounds.py)
are smooth colour blobs, large shapes and Voronoi mosaics, and the `background` perturbation draws
sinusoidal plane waves; these clips are swarms of small particles on random walks over a two-colour
linear gradient that turns and slides. Retention under them measures generalisation to a kind of
background no training choice was tuned on. Deterministic in --seed.

    python tools/make_eval_videos.py [--out benchmarks/data/eval_videos] [--clips 4] [--size 64]
                                     [--frames 90] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from training.rollout import write_video

ROOT = Path(__file__).resolve().parents[1]


def clip(rng: np.random.Generator, size: int, frames: int) -> np.ndarray:
    """[frames, size, size, 3] uint8: particles on random walks, wrapping at the edges, over a
    gradient between two colours whose direction turns and whose bands slide."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    ends = rng.uniform(0, 255, (2, 3)).astype(np.float32)
    angle, turn, slide = rng.uniform(0, 2 * np.pi), rng.uniform(0.01, 0.04), rng.uniform(0.005, 0.02)
    count = int(rng.integers(40, 120))
    position = rng.uniform(0, size, (count, 2))
    velocity = rng.normal(0, 0.5, (count, 2))
    radius = rng.uniform(1.0, 2.5, count)
    colours = rng.uniform(0, 255, (count, 3)).astype(np.float32)
    out = np.empty((frames, size, size, 3), np.uint8)
    for t in range(frames):
        a = angle + turn * t
        ramp = ((np.cos(a) * xx + np.sin(a) * yy + slide * t) % 2.0).astype(np.float32)
        ramp = np.minimum(ramp, 2.0 - ramp)[..., None]  # 0 -> 1 -> 0: no seam where the bands wrap
        image = (1 - ramp) * ends[0] + ramp * ends[1]
        for (py, px), r, c in zip(position, radius, colours, strict=True):
            dy = (np.arange(size) - py + size / 2) % size - size / 2  # the shortest way round
            dx = (np.arange(size) - px + size / 2) % size - size / 2
            image[dy[:, None] ** 2 + dx[None, :] ** 2 <= r * r] = c
        out[t] = np.clip(image, 0, 255)
        velocity = 0.9 * velocity + rng.normal(0, 0.3, velocity.shape)
        position = (position + velocity) % size
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/data/eval_videos")
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--frames", type=int, default=90)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    for i in range(args.clips):
        path = write_video(list(clip(rng, args.size, args.frames)), args.out / f"particles_{i}.mp4", scale=1)
        print(f"{path} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
