"""The simulator as teacher: exact masks of the task's key objects, from ground truth."""

from __future__ import annotations

import numpy as np

from training.envs import PixelEnv
from training.teachers.base import Labels, Observation, Teacher, downsample_mask


class SimTeacher(Teacher):
    kind = "sim"
    batched = False

    def capture(self, env: PixelEnv, frame: np.ndarray) -> np.ndarray:
        return downsample_mask(env.object_mask(self.config.objects), self.map_size)

    def label(self, observations: list[Observation]) -> Labels:
        return Labels(np.stack([o.capture for o in observations]))
