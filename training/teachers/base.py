"""The teacher interface: knowledge maps (uint8 [map_size, map_size], 255 = matters) for observations.

Labelling is split in two so that model-based teachers can batch and run off the critical path:
`capture` takes, synchronously, what the teacher needs from the moment (the env moves on after
it), and `label` turns a batch of captures into maps later, inline or in a background thread.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

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


@dataclass
class Observation:
    capture: Any  # what Teacher.capture took: the frame, or for `sim` its masks
    index: int  # the observation's position in its episode (0 = the reset frame)


def foreground_from_maps(maps: np.ndarray, size: int) -> np.ndarray:
    """Bool [B, size, size]: where a teacher without a scene calls a pixel relevant (its map, resized
    nearest, at least half on), for compositing and the gate."""
    cells = (np.arange(size) * maps.shape[-1]) // size
    return maps[:, cells][:, :, cells] >= 128


@dataclass
class Labels:
    maps: np.ndarray  # [B, m, m] uint8
    embeddings: np.ndarray | None = None  # [B, D] float16, a global target for the contrastive loss
    # [B, H, W] bool: what is not background, at frame resolution; None: derived from the maps
    foreground: np.ndarray | None = None


class Teacher(ABC):
    kind: str
    embedding_dim: int | None = None  # set when the teacher also gives a global embedding
    batched: bool = True  # False: labels are ready at capture, and batching would only delay them

    def __init__(self, config: TeacherConfig) -> None:
        self.config = config
        self.map_size = config.map_size

    def capture(self, env: PixelEnv, frame: np.ndarray) -> Any:
        """What labelling needs from the env's current state; most teachers only need the frame."""
        return frame

    @abstractmethod
    def label(self, observations: list[Observation]) -> Labels:
        """Maps for a batch of observations, given in the order they were seen."""

    def stats(self) -> dict[str, int]:
        """Counters worth a line in the run summary (the VLM's call counts)."""
        return {}

    def annotate(self, env: PixelEnv, frame: np.ndarray) -> np.ndarray:
        """The knowledge map of one frame, the env's current one; for inspection and tests."""
        return self.label([Observation(self.capture(env, frame), 0)]).maps[0]
