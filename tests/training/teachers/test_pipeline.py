"""Batched labelling, inline and in a worker thread: every frame gets its own label, in order."""

import numpy as np
import pytest

from training.config import EnvConfig, TeacherConfig
from training.envs import make_env
from training.replay import ReplayBuffer
from training.teachers import LabelPipeline, downsample_mask
from training.teachers.sim import SimTeacher

OBJECTS = ["cart", "pole_1"]


def collect(pipeline: LabelPipeline, replay: ReplayBuffer, steps: int) -> list[np.ndarray]:
    """Runs an episode through replay and pipeline; returns the masks each frame should get."""
    env = make_env(EnvConfig(id="dmc:cartpole-swingup", image_size=32, render_quality="fast"), seed=0)
    step = env.reset()
    expected = [downsample_mask(env.object_mask(OBJECTS), 8)]
    pipeline.submit(replay.add_first(step.frame), env, step.frame, 0)
    for i in range(1, steps):
        step = env.step(np.ones(1))
        expected.append(downsample_mask(env.object_mask(OBJECTS), 8))
        pipeline.submit(replay.add(np.ones(1), step.reward, step.frame, step.terminal), env, step.frame, i)
    return expected


class BatchedSimTeacher(SimTeacher):
    """The simulator's masks, labelled in batches like a model teacher's."""

    batched = True


@pytest.mark.parametrize("background", [False, True], ids=["inline", "thread"])
def test_labels_land_in_batches_on_their_own_frames(background):
    replay = ReplayBuffer(64, (32, 32, 3), 1, frame_stack=3, n_step=1, gamma=0.9, map_size=8)
    teacher = BatchedSimTeacher(TeacherConfig(kind="sim", objects=OBJECTS, map_size=8))
    pipeline = LabelPipeline(teacher, replay, batch_size=4, background=background)
    expected = collect(pipeline, replay, steps=10)
    if not background:  # two full batches labelled at once, the last two frames still queued
        assert replay.labelled[:10].tolist() == [True] * 8 + [False] * 2
    pipeline.close()
    assert replay.labelled[:10].all() and pipeline.labelled == 10
    np.testing.assert_array_equal(replay.maps[:10], np.stack(expected))
    assert pipeline.label_seconds > 0


def test_the_sim_teacher_labels_at_once():
    replay = ReplayBuffer(64, (32, 32, 3), 1, frame_stack=3, n_step=1, gamma=0.9, map_size=8)
    teacher = SimTeacher(TeacherConfig(kind="sim", objects=OBJECTS, map_size=8))
    collect(LabelPipeline(teacher, replay, batch_size=32, background=False), replay, steps=5)
    assert replay.labelled[:5].all()
