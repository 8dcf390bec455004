"""Pixel environments behind one small protocol: see `base.PixelEnv`."""

from training.config import EnvConfig
from training.envs.base import PixelEnv, Step


def make_env(config: EnvConfig, seed: int) -> PixelEnv:
    """`dmc:<domain>-<task>` for the DeepMind Control Suite, `gym:<id>` for gymnasium pixel envs."""
    family, _, name = config.id.partition(":")
    if family == "dmc":
        from training.envs.dmc import DMCEnv

        return DMCEnv(name, config, seed)
    if family == "gym":
        from training.envs.gym_pixels import GymPixelEnv

        return GymPixelEnv(name, config, seed)
    raise ValueError(f"env.id: '{config.id}' must start with 'dmc:' or 'gym:'")


__all__ = ["PixelEnv", "Step", "make_env"]
