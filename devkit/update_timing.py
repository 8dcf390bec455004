"""Seconds per learner update, several agents side by side: the rounds alternate between them, so
a loaded machine slows each alike and only their ratios are compared."""

from __future__ import annotations

import time

import torch

from training.agent import Agent
from training.replay import Batch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def update_seconds(
    agents: dict[str, Agent],
    batches: dict[str, Batch],
    rounds: int,
    updates: int,
    time_box: float | None = None,
    warmups: dict[str, float] | None = None,
) -> dict[str, list[float]]:
    """Each agent's update times on its batch, after two warm-up updates (compilation when enabled).

    `time_box` ends the rounds early (after the first) once that many seconds have gone; `warmups`
    receives each agent's warm-up seconds.
    """
    for name, agent in agents.items():
        tic = time.perf_counter()
        agent.update(batches[name], frames=0)
        agent.update(batches[name], frames=0)
        _sync(agent.device)
        if warmups is not None:
            warmups[name] = time.perf_counter() - tic
    times: dict[str, list[float]] = {name: [] for name in agents}
    start = time.perf_counter()
    for r in range(rounds):
        if r and time_box is not None and time.perf_counter() - start > time_box:
            break
        for name, agent in agents.items():
            for _ in range(updates):
                _sync(agent.device)
                tic = time.perf_counter()
                agent.update(batches[name], frames=0)
                _sync(agent.device)
                times[name].append(time.perf_counter() - tic)
    return times
