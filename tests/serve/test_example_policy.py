"""The README's first runnable step: the example policy that ships in examples/, served by
semore-serve and driven from simulated camera frames, balances the pole as its record says."""

import hashlib
import json
from pathlib import Path

import numpy as np

from semore_runtime.policy import OnnxPolicy
from serve.server import build_server
from training.evaluate import main as semore_eval

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cartpole_balance"


def test_the_example_policy_is_the_recorded_file_and_acts_in_bounds():
    policy_file = EXAMPLE / "policy.onnx"
    recorded = (EXAMPLE / "policy.sha256").read_text().split()[0]
    assert hashlib.sha256(policy_file.read_bytes()).hexdigest() == recorded
    assert policy_file.stat().st_size < 8 * 2**20  # small enough to ship in the repository
    policy = OnnxPolicy(policy_file, device="cpu")
    assert policy.spec.env_id == "dmc:cartpole-balance"
    frames = np.random.default_rng(0).integers(0, 256, policy.spec.stack_shape, dtype=np.uint8)
    action = policy.act(frames)
    assert action.shape == (policy.spec.action_dim,) and np.isfinite(action).all()
    assert (np.asarray(policy.spec.action_low) <= action).all()
    assert (action <= np.asarray(policy.spec.action_high)).all()


def test_the_example_policy_served_balances_as_recorded(tmp_path):
    record = json.loads((EXAMPLE / "eval.json").read_text())
    server = build_server(model=EXAMPLE / "policy.onnx", port=0, device="cpu").start()
    try:
        args = ["--server", server.address, "--episodes", "1", "--seed", str(record["seed"])]
        assert semore_eval([*args, "--json", str(tmp_path / "served.json")]) == 0
    finally:
        server.stop(grace=0)
    served = json.loads((tmp_path / "served.json").read_text())
    # The same seeded first episode as the record's; float bits may differ with thread counts,
    # so an episode can drift a little, but a policy that balances stays near its record.
    assert served["env"] == record["env"]
    assert served["mean_return"] > 0.9 * record["returns"][0]
