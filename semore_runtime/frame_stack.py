"""K-frame stacking with the training semantics, shared by training, evaluation and serving."""

from __future__ import annotations

import numpy as np


class FrameStack:
    """Keeps the last K frames, oldest first.

    The first frame of an episode fills every slot, exactly as the replay buffer rebuilds stacks
    at the start of an episode, so a deployed policy sees what it was trained on.
    """

    def __init__(self, k: int, frame_shape: tuple[int, ...]) -> None:
        if k < 1:
            raise ValueError(f"frame stack size must be >= 1, got {k}")
        self.k = k
        self.frame_shape = tuple(frame_shape)
        self._frames = np.zeros((k, *self.frame_shape), dtype=np.uint8)
        self._empty = True

    def reset(self) -> None:
        """Starts a new episode: the next pushed frame fills the stack."""
        self._empty = True

    def push(self, frame: np.ndarray) -> np.ndarray:
        """Adds a frame and returns the stack [K, *frame_shape] (a copy, safe to keep)."""
        if frame.shape != self.frame_shape:
            raise ValueError(f"frame shape {frame.shape} does not match the stack's {self.frame_shape}")
        if frame.dtype != np.uint8:
            raise ValueError(f"frames must be uint8, got {frame.dtype}")
        if self._empty:
            self._frames[:] = frame
            self._empty = False
        else:
            self._frames[:-1] = self._frames[1:]
            self._frames[-1] = frame
        return self._frames.copy()
