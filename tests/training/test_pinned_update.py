"""What a trial of the evidence sweep measures, pinned: two updates of every arm on a fixed batch.

The sweep accumulates over sessions, and every trial of an arm must come from code that trains
identically. A refactor that changes any loss of these updates, however slightly, fails here;
a change meant to alter training updates the figures and starts a new sweep.
"""

import numpy as np
import pytest
import torch

from devkit.batches import synthetic_batch
from evidence.spec import load_spec
from tests.helpers.training import ROOT
from training.agent import make_agent
from training.config import load_config

SPEC = load_spec(ROOT / "sweeps/cpu_evidence_v2.yaml")
CPU = torch.device("cpu")

# arm -> the losses of the second update (after one optimiser step of every part).
PINNED = {
    "semore": {
        "critic": 0.8919,
        "critic_composited": 0.801571,
        "transition": 1.024584,
        "reward": 0.096728,
        "knowledge_map": 0.702908,
        "foreground": 0.668801,
        "contrastive": 2.774525,
        "spread_feature": 0.158606,
        "spread_semantic": 0.114783,
        "spread_motion": 0.275271,
        "actor": -0.303721,
    },
    "semore-nocomposite": {
        "critic": 0.694765,
        "transition": 1.021717,
        "reward": 0.118416,
        "knowledge_map": 0.702232,
        "foreground": 0.669176,
        "contrastive": 2.777957,
        "spread_feature": 0.158664,
        "spread_semantic": 0.116809,
        "spread_motion": 0.269677,
        "actor": -0.284466,
    },
    "semore-none": {
        "critic": 0.767668,
        "transition": 0.85426,
        "reward": 0.104073,
        "spread_feature": 0.143567,
        "spread_semantic": 0.10626,
        "spread_motion": 0.225303,
        "actor": 0.214002,
    },
    "pixel": {"critic": 0.56506, "spread_feature": 0.062153, "actor": -0.299977},
    "pixel+composite": {
        "critic": 0.63407,
        "critic_composited": 0.803601,
        "spread_feature": 0.058255,
        "actor": -0.18688,
    },
}


def second_update(arm: str) -> dict[str, float]:
    trial = next(t for t in SPEC.trials(ROOT / "unused") if t.arm == arm and t.seed == 1)
    config = load_config(ROOT / SPEC.base, trial.overrides)
    torch.manual_seed(0)
    agent = make_agent(config, 1, CPU)
    batch = synthetic_batch(config, 1, np.random.default_rng(0), batch_size=16)
    agent.update(batch, frames=5000)
    metrics = agent.update(batch, frames=5000)
    return {k: float(v) for k, v in metrics.items() if k not in ("q", "alpha", "entropy")}


@pytest.mark.parametrize("arm", list(SPEC.arms))
def test_one_update_of_each_evidence_arm_is_pinned(arm):
    torch.set_num_threads(1)  # reductions sum in one order
    measured = second_update(arm)
    assert measured == pytest.approx(PINNED[arm], rel=1e-4, abs=1e-6), measured
