"""Shared test settings: headless rendering, no model-hub lookups, tiny budgets."""

import os
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402
import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# A run small enough for a test: 32 px frames, a narrow encoder, a few hundred frames.
TINY = [
    "env.image_size=32",
    "env.action_repeat=8",
    "env.render_quality=fast",
    "encoder.channels=8",
    "encoder.layers=2",
    "encoder.feature_dim=16",
    "encoder.attention_grid=3",
    "agent.batch_size=16",
    "agent.hidden_dim=32",
    "teacher.map_size=8",
    "train.frames=480",
    "train.seed_frames=160",
    "train.eval_every_frames=240",
    "train.eval_episodes=1",
    "train.checkpoint_every_frames=240",
]


@pytest.fixture
def tiny() -> list[str]:
    return list(TINY)


@pytest.fixture
def tiny_sweep_spec(tmp_path: Path):
    """Writes a spec of 2 arms x 1 seed on cartpole at TINY budgets; keyword arguments override fields."""

    def write(**fields) -> Path:
        spec = {
            "name": "tiny",
            "base": "configs/quickstart.yaml",
            "set": [*TINY, "train.video=false"],
            "tasks": {"cartpole_balance": ["env.id=dmc:cartpole-balance"]},
            "arms": {"pixel": ["encoder.kind=pixel", "teacher.kind=none"], "semore-sim": []},
            "seeds": [1],
            "eval": {"episodes": 1, "perturbations": ["colors"]},
            "max_concurrent": 2,
            "retries": 0,
        } | fields
        path = tmp_path / "tiny.yaml"
        path.write_text(yaml.safe_dump(spec))
        return path

    return write
