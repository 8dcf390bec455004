import numpy as np
import torch

from tests.helpers.training import TINY
from training import checkpoint
from training.agent import make_agent
from training.config import load_config


def test_save_then_load_gives_identical_actions(tmp_path):
    config = load_config(overrides=[*TINY, "teacher.objects=[cart]"])
    torch.manual_seed(0)
    agent = make_agent(config, 2, torch.device("cpu"))
    path = tmp_path / "checkpoint.pt"
    checkpoint.save_atomic({"agent": agent.state_dict()}, path)
    assert not (tmp_path / "checkpoint.pt.tmp").exists()

    torch.manual_seed(1)  # different initial weights
    restored = make_agent(config, 2, torch.device("cpu"))
    restored.load_state_dict(checkpoint.load(path)["agent"])
    stacks = np.random.default_rng(0).integers(0, 256, (5, 3, 32, 32, 3), dtype=np.uint8)
    for stack in stacks:
        np.testing.assert_array_equal(agent.act(stack, explore=False), restored.act(stack, explore=False))


def test_rng_state_round_trip():
    rng = np.random.default_rng(5)
    state = checkpoint.rng_state(rng)
    expected = (rng.random(), torch.rand(1).item())
    other = np.random.default_rng(0)
    checkpoint.restore_rng(state, other)
    assert (other.random(), torch.rand(1).item()) == expected
