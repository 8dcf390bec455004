"""benchmarks/update_cost.py on a real sweep spec at one update a round: every arm timed, each
against the spec's baseline."""

from __future__ import annotations

import json

from evidence.spec import load_spec
from tests.helpers.training import ROOT, run_benchmark


def test_every_arm_of_the_spec_gets_a_ratio_to_the_baseline(tmp_path):
    out = tmp_path / "cost.json"
    run_benchmark(
        "update_cost", "--spec", "sweeps/composite_probe.yaml", "--rounds", "2", "--updates", "1", "--out", str(out),
    )  # fmt: skip
    arms = json.loads(out.read_text())["tasks"]["cartpole_balance"]
    spec = load_spec(ROOT / "sweeps/composite_probe.yaml")
    assert set(arms) == set(spec.arms)
    assert arms[spec.baseline]["ratio_to_baseline"] == 1.0
    assert all(entry["ms"] > 0 for entry in arms.values())
