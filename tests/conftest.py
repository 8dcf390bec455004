"""Shared test settings: headless rendering, no model-hub lookups, tiny budgets."""

import os
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402
import yaml  # noqa: E402

# Imported before any test imports grpc: it turns gRPC's fork support off (see its docstring).
import semore_runtime  # noqa: E402, F401
from tests.helpers.training import PIXEL_ARM, TINY  # noqa: E402


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
            "arms": {"pixel": [*PIXEL_ARM], "semore-sim": []},
            "seeds": [1],
            "eval": {"episodes": 1, "perturbations": ["colors"]},
            "max_concurrent": 2,
            "retries": 0,
        } | fields
        path = tmp_path / "tiny.yaml"
        path.write_text(yaml.safe_dump(spec))
        return path

    return write
