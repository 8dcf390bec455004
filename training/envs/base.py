"""The environment protocol the trainer, the teachers and semore-eval share.

Frames are H x W x 3 uint8. Actions are in the env's own bounds, as the exported policy, the
server and a robot give them; the agent's actions are in [-1, 1]^A and meet the env at one place,
`PixelEnv.from_unit`. Action repeat renders only the last frame; the K-frame stack uses the runtime's
FrameStack so training and deployment stack frames identically. Torch-free on purpose:
semore-eval runs exported policies through this with no torch installed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from semore_runtime import FrameStack
from training.config import EnvConfig
from training.perturb import Perturbation


@dataclass
class Step:
    frame: np.ndarray  # [H, W, 3] uint8, the newest frame
    stack: np.ndarray  # [K, H, W, 3] uint8, oldest first
    reward: float  # summed over the action repeat
    terminal: bool  # the task ended: no bootstrapping past it
    last: bool  # the episode is over (terminal or time limit)


class PixelEnv(ABC):
    action_low: np.ndarray
    action_high: np.ndarray
    has_scene = False  # a simulator scene that perturbations can change (dm_control)

    def __init__(self, config: EnvConfig) -> None:
        self.config = config
        self.frame_shape = (config.image_size, config.image_size, 3)
        self._stack = FrameStack(config.frame_stack, self.frame_shape)
        self._perturbation: Perturbation | None = None

    def perturb(self, perturbation: Perturbation) -> None:
        """From now on every frame is perturbed (and the scene changed once, for scene perturbations)."""
        if perturbation.needs_scene and not self.has_scene:
            raise ValueError(f"--perturb: this perturbation needs a dm_control scene, not {self.config.id}")
        if perturbation.scene is not None:
            perturbation.scene(self)
        self._perturbation = perturbation

    def _perturbed(self, frame: np.ndarray) -> np.ndarray:
        return frame if self._perturbation is None else self._perturbation(self, frame)

    @property
    def action_dim(self) -> int:
        return len(self.action_low)

    def reset(self) -> Step:
        self._stack.reset()
        if self._perturbation is not None and self._perturbation.episode is not None:
            self._perturbation.episode(self)
        frame = self._perturbed(self._reset())
        return Step(frame, self._stack.push(frame), 0.0, False, False)

    def from_unit(self, action: np.ndarray) -> np.ndarray:
        """An agent's action in [-1, 1]^A, mapped linearly onto this env's bounds."""
        unit = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        return self.action_low + (unit + 1.0) * 0.5 * (self.action_high - self.action_low)

    def step(self, action: np.ndarray) -> Step:
        """One agent step with an action in the env's bounds (clipped to them), repeated action_repeat times."""
        action = np.clip(np.asarray(action, dtype=np.float64), self.action_low, self.action_high)
        total = 0.0
        terminal = truncated = False
        for _ in range(self.config.action_repeat):
            reward, terminal, truncated = self._advance(action)
            total += reward
            if terminal or truncated:
                break
        frame = self._perturbed(self._render())
        return Step(frame, self._stack.push(frame), total, terminal, terminal or truncated)

    @abstractmethod
    def _reset(self) -> np.ndarray:
        """Starts an episode and returns its first frame."""

    @abstractmethod
    def _advance(self, action: np.ndarray) -> tuple[float, bool, bool]:
        """One simulator step with an action in the env's own bounds: (reward, terminal, truncated)."""

    @abstractmethod
    def _render(self) -> np.ndarray:
        """The current frame, [H, W, 3] uint8."""

    @abstractmethod
    def object_mask(self, objects: list[str]) -> np.ndarray:
        """Ground truth: a bool [H, W] mask of the named objects' pixels in the current frame."""

    def close(self) -> None:  # noqa: B027 - optional hook
        pass
