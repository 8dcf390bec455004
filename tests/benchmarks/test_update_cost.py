"""benchmarks/update_cost.py on a real sweep spec at one update a round: every arm timed, each
against the spec's baseline."""

from __future__ import annotations

import json

from tests.helpers.training import run_benchmark


def test_every_arm_of_the_spec_gets_a_ratio_to_the_baseline(tmp_path):
    out = tmp_path / "cost.json"
    run_benchmark(
        "update_cost", "--spec", "sweeps/composite_probe.yaml", "--rounds", "2", "--updates", "1", "--out", str(out),
    )  # fmt: skip
    arms = json.loads(out.read_text())["tasks"]["cartpole_balance"]
    assert set(arms) == {
        "semore-consistency",
        "pixel+consistency",
        "semore-consistency-w30",
        "pixel+consistency-w30",
        "semore-from-25k",
        "pixel+composite-from-25k",
    }
    assert arms["pixel+consistency"]["ratio_to_baseline"] == 1.0
    assert all(entry["ms"] > 0 for entry in arms.values())
