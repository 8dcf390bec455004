"""Gymnasium environments seen through pixels: image observations, or rgb_array renders."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from PIL import Image

from training.config import EnvConfig
from training.envs.base import PixelEnv

# CarRacing's renderer draws with fixed colours (gymnasium's car_racing.py), so the key objects'
# pixels are known exactly. The bottom 12 rows of its 96x96 frame are the instrument bar.
CAR_RACING_INDICATOR_ROWS = 12


def _car_racing_mask(frame: np.ndarray, objects: list[str]) -> np.ndarray:
    rgb = frame.astype(np.int16)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    mask = np.zeros(frame.shape[:2], dtype=bool)
    for name in objects:
        if name == "road":  # grey tiles, RGB ~ (102..107) each
            mask |= (abs(r - g) < 8) & (abs(g - b) < 8) & (r > 90) & (r < 125)
        elif name == "car":  # red hull
            mask |= (r > 150) & (g < 60) & (b < 60)
        else:
            raise ValueError(f"teacher.objects: CarRacing knows 'road' and 'car', not '{name}'")
    mask[-CAR_RACING_INDICATOR_ROWS * frame.shape[0] // 96 :] = False
    return mask


class GymPixelEnv(PixelEnv):
    def __init__(self, name: str, config: EnvConfig, seed: int) -> None:
        super().__init__(config)
        try:
            self._env = gym.make(name, render_mode="rgb_array")
        except gym.error.Error as exc:
            raise ValueError(f"env.id: gymnasium cannot make '{name}': {exc}") from exc
        space = self._env.action_space
        if not isinstance(space, gym.spaces.Box):
            raise ValueError(f"env.id: '{name}' has a {type(space).__name__} action space; Semore needs Box")
        self.name = name
        self.action_low = space.low.astype(np.float64)
        self.action_high = space.high.astype(np.float64)
        obs_space = self._env.observation_space
        self._pixels_in_obs = obs_space.dtype == np.uint8 and len(obs_space.shape or ()) == 3
        self._seed: int | None = seed
        self._raw: np.ndarray | None = None

    def _reset(self) -> np.ndarray:
        obs, _ = self._env.reset(seed=self._seed)
        self._seed = None  # seed once; later episodes continue the env's own generator
        self._observe(obs)
        return self._render()

    def _advance(self, action: np.ndarray) -> tuple[float, bool, bool]:
        obs, reward, terminated, truncated, _ = self._env.step(action.astype(np.float32))
        self._observe(obs)
        return float(reward), bool(terminated), bool(truncated)

    def _observe(self, obs: np.ndarray) -> None:
        self._raw = obs if self._pixels_in_obs else None

    def _native_frame(self) -> np.ndarray:
        return self._raw if self._raw is not None else self._env.render()

    def _render(self) -> np.ndarray:
        frame = self._native_frame()
        size = self.config.image_size
        if frame.shape[:2] != (size, size):
            frame = np.asarray(Image.fromarray(frame).resize((size, size), Image.BILINEAR))
        return np.ascontiguousarray(frame, dtype=np.uint8)

    def object_mask(self, objects: list[str]) -> np.ndarray:
        if not self.name.startswith("CarRacing"):
            raise ValueError(f"teacher: the sim teacher knows no object colours for '{self.name}'")
        mask = _car_racing_mask(self._native_frame(), objects)
        size = self.config.image_size
        if mask.shape != (size, size):
            mask = np.asarray(Image.fromarray(mask).resize((size, size), Image.NEAREST))
        return mask

    def close(self) -> None:
        self._env.close()
