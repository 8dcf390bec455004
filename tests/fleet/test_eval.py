"""The robot's path end to end on the fleet: an exported Semore policy deployed as a version,
evaluated in simulation by ``semore-eval --server --version`` through the fleet."""

from __future__ import annotations

import json

import pytest

from export.onnx_export import export_checkpoint
from tests.helpers.training import make_checkpoint
from training.evaluate import main as semore_eval

pytestmark = pytest.mark.ray


def test_semore_eval_through_the_fleet_matches_in_process(fleet, deploy, token_file, tmp_path):
    make_checkpoint(tmp_path / "checkpoint.pt", "semore")
    policy = export_checkpoint(
        tmp_path / "checkpoint.pt", tmp_path / "policy.onnx", use_env_frames=False
    ).path
    deploy("cartpole", policy)
    common = ["--episodes", "1", "--seed", "3"]
    served = ["--server", fleet.target, "--version", "cartpole", "--token-file", str(token_file)]
    assert semore_eval([*served, *common, "--json", str(tmp_path / "served.json")]) == 0
    assert semore_eval(["--model", str(policy), *common, "--json", str(tmp_path / "local.json")]) == 0
    served_result = json.loads((tmp_path / "served.json").read_text())
    local_result = json.loads((tmp_path / "local.json").read_text())
    assert served_result["env"] == local_result["env"] == "dmc:cartpole-balance"
    # The same file and seeded episode; thread counts differ, so the last float bits may too.
    assert (
        abs(served_result["mean_return"] - local_result["mean_return"]) < 0.15 * local_result["mean_return"]
    )
