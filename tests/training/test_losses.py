"""Each auxiliary loss must be learnable: fitting one fixed batch drives it down."""

import numpy as np
import pytest
import torch

from devkit.batches import synthetic_batch
from training.agent import make_agent
from training.config import load_config
from training.losses import info_nce


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    torch.manual_seed(0)
    config = load_config(
        overrides=[
            "teacher.objects=[x]",
            "env.image_size=32",
            "encoder.channels=16",
            "encoder.layers=2",
            "encoder.feature_dim=16",
            "agent.batch_size=16",
            "agent.hidden_dim=64",
            "agent.lr=1e-3",
            "agent.augment_pad=0",
            "teacher.map_size=8",
        ]
    )
    agent = make_agent(config, 2, torch.device("cpu"))
    batch = synthetic_batch(config, 2, np.random.default_rng(0))
    return [agent.update(batch, frames=0) for _ in range(150)]


@pytest.mark.parametrize("name", ["critic", "transition", "reward", "knowledge_map", "contrastive"])
def test_loss_falls_on_a_fixed_batch(history, name):
    first = np.mean([h[name] for h in history[:10]])
    last = np.mean([h[name] for h in history[-10:]])
    assert last < 0.7 * first, f"{name}: {first:.4f} -> {last:.4f}"


def test_info_nce_prefers_matching_pairs():
    a = torch.randn(8, 16)
    assert info_nce(a, a, 0.1) < info_nce(a, torch.randn(8, 16), 0.1)
