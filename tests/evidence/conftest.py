"""Fixtures for the report tests: a sweep folder as semore-sweep leaves it."""

import json
from pathlib import Path

import pytest


@pytest.fixture
def finished_sweep(tmp_path: Path):
    """A sweep folder as semore-sweep leaves it: 2 arms x 3 seeds on one task, plus a running trial.

    `semore` scores 700-900 and keeps 90% under `colors`; `pixel` scores 300-500 and keeps 50%.
    """
    folder = tmp_path / "sweep"
    spec = {
        "name": "fixture",
        "baseline": "pixel",
        "threshold": 800.0,
        "return_range": {"cartpole_balance": [0.0, 1000.0]},
        "tasks": {"cartpole_balance": []},
        "arms": {"pixel": [], "semore": []},
        "seeds": [1, 2, 3],
        "eval": {"episodes": 10, "perturbations": ["colors"], "level": 1.0},
    }
    folder.mkdir()
    (folder / "sweep.json").write_text(json.dumps(spec))
    finals = {"pixel": [300.0, 400.0, 500.0], "semore": [700.0, 800.0, 900.0]}
    kept = {"pixel": 0.5, "semore": 0.9}
    for arm, scores in finals.items():
        for seed, final in zip([1, 2, 3], scores, strict=True):
            trial = folder / "trials/cartpole_balance" / arm / f"seed{seed}"
            (trial / "run").mkdir(parents=True)
            (trial / "eval").mkdir()
            curve = [
                {"frames": f, "return": final * f / 30000, "std": 0.0, "seconds": 1.0}
                for f in (10000, 20000, 30000)
            ]
            (trial / "run/summary.json").write_text(json.dumps({"frames": 30000, "curve": curve}))
            (trial / "eval/clean.json").write_text(json.dumps({"mean_return": final}))
            (trial / "eval/colors.json").write_text(json.dumps({"mean_return": final * kept[arm]}))
            state = {"task": "cartpole_balance", "arm": arm, "seed": seed, "state": "done"}
            (trial / "trial.json").write_text(json.dumps(state))
    running = folder / "trials/cartpole_balance/semore/seed4"
    running.mkdir(parents=True)
    (running / "trial.json").write_text(
        json.dumps({"task": "cartpole_balance", "arm": "semore", "seed": 4, "state": "running"})
    )
    return folder
