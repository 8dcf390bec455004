"""Fixtures for the report tests: sweep folders as semore-sweep leaves them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

TASK = "cartpole_balance"
FRAMES = (10000, 20000, 30000)


def _write_trial(
    folder: Path, arm: str, seed: int, final: float, kept: float, frames: tuple[int, ...]
) -> None:
    """A done trial whose curve climbs linearly to `final` and keeps `kept` of it under `colors`."""
    trial = folder / "trials" / TASK / arm / f"seed{seed}"
    (trial / "run").mkdir(parents=True)
    (trial / "eval").mkdir()
    curve = [{"frames": f, "return": final * f / FRAMES[-1], "std": 0.0, "seconds": 1.0} for f in frames]
    (trial / "run/summary.json").write_text(json.dumps({"frames": frames[-1], "curve": curve}))
    (trial / "eval/clean.json").write_text(json.dumps({"mean_return": final, "returns": [final] * 10}))
    (trial / "eval/colors.json").write_text(
        json.dumps({"mean_return": final * kept, "returns": [final * kept] * 10})
    )
    state = {"task": TASK, "arm": arm, "seed": seed, "state": "done"}
    (trial / "trial.json").write_text(json.dumps(state))


@pytest.fixture
def make_sweep(tmp_path: Path) -> Callable[..., Path]:
    """Writes a sweep folder on one task: `finals` maps arm -> each seed's final clean return;
    `stopped_early` names arm/seed runs whose curve ends after its first evaluation; `idle_arms` are
    arms in the spec with no finished trial. A semore seed 4 is always left running."""

    def make(
        finals: dict[str, list[float]],
        kept: dict[str, float],
        stopped_early: tuple[tuple[str, int], ...] = (),
        idle_arms: tuple[str, ...] = (),
    ) -> Path:
        folder = tmp_path / "sweep"
        seeds = list(range(1, 1 + max(len(v) for v in finals.values())))
        spec = {
            "name": "fixture",
            "baseline": "pixel",
            "threshold": 800.0,
            "return_range": {TASK: [0.0, 1000.0]},
            "tasks": {TASK: []},
            "arms": {arm: [] for arm in [*finals, *idle_arms]},
            "seeds": seeds,
            "eval": {"episodes": 10, "perturbations": ["colors"], "level": 1.0},
        }
        folder.mkdir()
        (folder / "sweep.json").write_text(json.dumps(spec))
        for arm, scores in finals.items():
            for seed, final in enumerate(scores, start=1):
                frames = FRAMES[:1] if (arm, seed) in stopped_early else FRAMES
                _write_trial(folder, arm, seed, final, kept[arm], frames)
        running = folder / "trials" / TASK / "semore" / "seed4"
        running.mkdir(parents=True)
        (running / "trial.json").write_text(
            json.dumps({"task": TASK, "arm": "semore", "seed": 4, "state": "running"})
        )
        return folder

    return make


@pytest.fixture
def finished_sweep(make_sweep: Callable[..., Path]) -> Path:
    """2 arms x 3 seeds: `semore` scores 700-900 and keeps 90% under `colors`; `pixel` scores
    300-500 and keeps 50%; plus the running semore seed 4, which must not count."""
    return make_sweep(
        {"pixel": [300.0, 400.0, 500.0], "semore": [700.0, 800.0, 900.0]}, {"pixel": 0.5, "semore": 0.9}
    )
