"""Runs whole episodes with any policy function: the trainer's evaluation and semore-eval share it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training.envs import PixelEnv

Policy = Callable[[np.ndarray], np.ndarray]  # [K, H, W, 3] uint8 stack -> action in the env's bounds


@dataclass
class EpisodeStats:
    returns: list[float] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    policy_seconds: list[float] = field(default_factory=list)  # one entry per policy call

    @property
    def mean(self) -> float:
        return float(np.mean(self.returns))

    @property
    def std(self) -> float:
        return float(np.std(self.returns))


def run_episodes(
    env: PixelEnv,
    policy: Policy,
    episodes: int,
    video_frames: list[np.ndarray] | None = None,
    on_reset: Callable[[], None] | None = None,
) -> EpisodeStats:
    """`video_frames` collects episode 0 (as the policy saw it); `on_reset` tells a stateful policy
    (a server stream) that a new episode starts."""
    stats = EpisodeStats()
    start = time.perf_counter()
    for episode in range(episodes):
        step = env.reset()
        if on_reset is not None:
            on_reset()
        total = 0.0
        while True:
            if video_frames is not None and episode == 0:
                video_frames.append(step.frame)
            tic = time.perf_counter()
            action = policy(step.stack)
            stats.policy_seconds.append(time.perf_counter() - tic)
            step = env.step(action)
            total += step.reward
            stats.steps += 1
            if step.last:
                break
        stats.returns.append(total)
    stats.seconds = time.perf_counter() - start
    return stats


def write_video(frames: list[np.ndarray], path: Path, fps: int = 30, scale: int = 4) -> Path:
    """mp4 through imageio-ffmpeg, or a gif when no ffmpeg is usable. Returns the written path."""
    import imageio.v2 as imageio

    big = [np.repeat(np.repeat(f, scale, axis=0), scale, axis=1) for f in frames]
    try:
        imageio.mimsave(path, big, fps=fps, macro_block_size=1)
    except (ImportError, RuntimeError, OSError):
        path = path.with_suffix(".gif")
        imageio.mimsave(path, big, duration=1000 / fps)
    return path
