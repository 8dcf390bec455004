"""Training-side helpers: tiny budgets, real `semore-train` runs, checkpoints and random batches."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from training.agent import make_agent
from training.checkpoint import Checkpoint, TrainedEnv, rng_state
from training.config import RunConfig, load_config
from training.envs import make_env

ROOT = Path(__file__).resolve().parents[2]

# A run small enough for a test: 32 px frames, a narrow encoder, a few hundred frames.
TINY = [
    "env.image_size=32",
    "env.action_repeat=8",
    "env.render_quality=fast",
    "encoder.channels=8",
    "encoder.layers=2",
    "encoder.feature_dim=16",
    "encoder.attention_grid=3",
    "agent.batch_size=16",
    "agent.hidden_dim=32",
    "teacher.map_size=8",
    "train.frames=480",
    "train.seed_frames=160",
    "train.eval_every_frames=240",
    "train.eval_episodes=1",
    "train.checkpoint_every_frames=240",
]
CARTPOLE = ["env.id=dmc:cartpole-balance", "teacher.objects=[cart, pole_1]"]
# The pixel baseline over the quickstart config, which gates and composites: neither, no teacher.
PIXEL_ARM = ["encoder.kind=pixel", "encoder.gate=false", "augment.composite=0", "teacher.kind=none"]


def train(out: Path, *overrides: str, resume: bool = False, **popen) -> subprocess.Popen:
    """Starts a real `semore-train` run at TINY budgets; `finish` waits for it."""
    cmd = [sys.executable, "-m", "training.cli", "--out", str(out)]
    cmd += [arg for o in [*TINY, *overrides] for arg in ("--set", o)]
    if resume:
        cmd.append("--resume")
    return subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen
    )


def run_module(module: str, *args) -> subprocess.CompletedProcess:
    """`python -m <module> *args` from the repository root, as a user runs it (paths and numbers
    as arguments are passed as text)."""
    cmd = [sys.executable, "-m", module, *map(str, args)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def run_benchmark(module: str, *args: str) -> None:
    """`python -m benchmarks.<module> *args`; asserts that it succeeded."""
    run = run_module(f"benchmarks.{module}", *args)
    assert run.returncode == 0, run.stderr[-3000:]


def finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    """Waits for a run, asserts it succeeded and returns its output."""
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def save_checkpoint(
    path: Path, config: RunConfig, agent, low: list[float], high: list[float], step: int
) -> None:
    """The agent's state as a checkpoint semore-train would write at `step`, for env bounds low/high."""
    Checkpoint(
        config=config,
        agent=agent.state_dict(),
        step=step,
        episode=0,
        elapsed=0.0,
        finished=False,
        curve=[],
        rng=rng_state(np.random.default_rng(0)),
        replay_size=0,
        env=TrainedEnv(id=config.env.id, action_low=low, action_high=high),
    ).save(path)


def make_checkpoint(
    path: Path, encoder: str, seed: int = 0, learner: str = "sac", extra: tuple[str, ...] = ()
):
    """A checkpoint as semore-train writes it, from a freshly initialised agent; `extra`: more overrides."""
    overrides = [*TINY, *CARTPOLE, f"encoder.kind={encoder}", "env.image_size=48", "encoder.layers=3"]
    overrides += [f"agent.kind={learner}", *extra]
    if encoder == "pixel":
        overrides.append("teacher.kind=none")
    config = load_config(overrides=overrides)
    torch.manual_seed(seed)
    env = make_env(config.env, 0)
    agent = make_agent(config, env.action_dim, torch.device("cpu"))
    save_checkpoint(path, config, agent, env.action_low.tolist(), env.action_high.tolist(), step=123)
    return config, agent
