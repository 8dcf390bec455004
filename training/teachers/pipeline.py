"""Teacher labelling off the critical path: observations are labelled in batches, inline or in a
background thread, and their maps land in the replay buffer when ready.

Model teachers (CLIP, a VLM) cost far more per call than per extra image in a batch, so one
call labels `batch_size` observations. With a worker thread the GPU labels while the trainer
steps the env and updates; only the trainer thread touches the replay buffer, so there is no
locking: finished batches are applied in order on the next `submit` or `drain`. The replay
buffer samples only labelled frames, so nothing waits for a label unless it has to.
"""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from training.envs import PixelEnv
from training.replay import ReplayBuffer
from training.teachers.base import Labels, Observation, Teacher, foreground_from_maps

MAX_IN_FLIGHT = 4  # batches queued on the worker before submit blocks: bounds memory and staleness


class LabelPipeline:
    def __init__(self, teacher: Teacher, replay: ReplayBuffer, batch_size: int, background: bool) -> None:
        self.teacher, self.replay = teacher, replay
        self.batch_size = batch_size if teacher.batched else 1
        self._pending_t: list[int] = []
        self._pending: list[Observation] = []
        self._in_flight: deque[tuple[np.ndarray, Future[tuple[Labels, float]]]] = deque()
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="teacher") if background else None
        self.label_seconds = 0.0  # the teacher's compute (capture and label), wherever it ran
        self.wait_seconds = 0.0  # the part the trainer thread spent in it or waiting for it
        self.labelled = 0

    def submit(self, t: int, env: PixelEnv, frame: np.ndarray, index: int) -> None:
        """Queue frame t (absolute replay index) of the env's current state, the index-th of its episode."""
        tic = time.perf_counter()
        self._pending.append(Observation(self.teacher.capture(env, frame), index))
        spent = time.perf_counter() - tic
        self.label_seconds += spent
        self.wait_seconds += spent
        self._pending_t.append(t)
        if len(self._pending) >= self.batch_size:
            self._dispatch()
        self._apply_finished(block=len(self._in_flight) > MAX_IN_FLIGHT)

    def drain(self) -> None:
        """Label everything queued and wait for it: before a checkpoint, and before the first update."""
        if self._pending:
            self._dispatch()
        while self._in_flight:
            self._apply_finished(block=True)

    def close(self) -> None:
        self.drain()
        if self._worker is not None:
            self._worker.shutdown()

    def _dispatch(self) -> None:
        t, batch = np.asarray(self._pending_t), self._pending
        self._pending_t, self._pending = [], []
        if self._worker is None:
            tic = time.perf_counter()
            labels, seconds = self._label(batch)
            self.wait_seconds += time.perf_counter() - tic
            self._store(t, labels, seconds)
        else:
            self._in_flight.append((t, self._worker.submit(self._label, batch)))

    def _label(self, batch: list[Observation]) -> tuple[Labels, float]:
        tic = time.perf_counter()
        labels = self.teacher.label(batch)
        return labels, time.perf_counter() - tic

    def _apply_finished(self, block: bool) -> None:
        while self._in_flight and (block or self._in_flight[0][1].done()):
            t, future = self._in_flight.popleft()
            tic = time.perf_counter()
            labels, seconds = future.result()  # re-raises a teacher error in the trainer thread
            self.wait_seconds += time.perf_counter() - tic
            self._store(t, labels, seconds)
            block = False

    def _store(self, t: np.ndarray, labels: Labels, seconds: float) -> None:
        if self.replay.foreground is not None and labels.foreground is None:
            labels.foreground = foreground_from_maps(labels.maps, self.replay.frames.shape[1])
        self.replay.set_labels(t, labels)
        self.label_seconds += seconds
        self.labelled += len(t)
