"""The simulator as teacher: exact masks of the task's key objects, from ground truth."""

from __future__ import annotations

import numpy as np

from training.envs import PixelEnv
from training.teachers.base import Labels, Observation, Teacher, downsample_mask


class SimTeacher(Teacher):
    kind = "sim"
    batched = False

    def capture(self, env: PixelEnv, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The objects' map, and the exact foreground where the env knows its background."""
        objects = downsample_mask(env.object_mask(self.config.objects), self.map_size)
        return objects, ~env.background_mask() if env.has_scene else None

    def label(self, observations: list[Observation]) -> Labels:
        maps = np.stack([o.capture[0] for o in observations])
        foregrounds = [o.capture[1] for o in observations]
        exact = all(f is not None for f in foregrounds)
        return Labels(maps, foreground=np.stack(foregrounds) if exact else None)
