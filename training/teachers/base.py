"""The teacher interface: a knowledge map per frame, uint8 [map_size, map_size], 255 = matters."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from training.config import TeacherConfig
from training.envs import PixelEnv


def downsample_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Area-average a [H, W] mask or relevance map in [0, 1] to [size, size] uint8.

    Block means keep thin objects (a cartpole's pole) visible as partial coverage instead of
    dropping them the way nearest-neighbour sampling would.
    """
    h, w = mask.shape
    rows = (np.arange(size + 1) * h) // size
    cols = (np.arange(size + 1) * w) // size
    sums = np.add.reduceat(np.add.reduceat(mask.astype(np.float32), rows[:-1], axis=0), cols[:-1], axis=1)
    areas = np.outer(np.diff(rows), np.diff(cols))
    return np.round(255.0 * sums / areas).astype(np.uint8)


class Teacher(ABC):
    kind: str

    def __init__(self, config: TeacherConfig) -> None:
        self.config = config
        self.map_size = config.map_size

    @abstractmethod
    def annotate(self, env: PixelEnv, frame: np.ndarray) -> np.ndarray:
        """The knowledge map of `frame`, the env's current frame."""
