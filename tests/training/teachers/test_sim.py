import numpy as np
import pytest
import torch

from training.config import EnvConfig, TeacherConfig
from training.envs import make_env
from training.teachers import Observation, downsample_mask, make_teacher
from training.teachers.base import foreground_from_maps

CPU = torch.device("cpu")


def render_with_hidden(env, geoms):
    """Re-render with the given geoms fully transparent: their pixels are the ones that change."""
    rgba = env.physics.model.geom_rgba
    saved = rgba[geoms].copy()
    matids = env.physics.model.geom_matid[geoms].copy()
    rgba[geoms, 3] = 0.0
    env.physics.model.geom_matid[geoms] = -1
    try:
        return env._render()
    finally:
        rgba[geoms] = saved
        env.physics.model.geom_matid[geoms] = matids


@pytest.mark.parametrize(
    ("task", "objects"),
    [
        ("cartpole-balance", ["cart", "pole_1"]),
        ("reacher-easy", ["finger", "target"]),
        ("ball_in_cup-catch", ["cup", "ball"]),
    ],
)
def test_sim_masks_cover_exactly_the_named_objects(task, objects):
    env = make_env(EnvConfig(id=f"dmc:{task}", image_size=64, render_quality="fast"), seed=0)
    env.reset()
    for _ in range(3):
        step = env.step(np.zeros(env.action_dim))
    mask = env.object_mask(objects)
    changed = np.any(step.frame != render_with_hidden(env, env.geom_ids(objects)), axis=-1)
    assert mask.sum() > 10
    # Every pixel the objects paint is in the mask, and almost all mask pixels are painted by them
    # (a few can coincide with an identical colour behind).
    assert not (changed & ~mask).any()
    assert (changed & mask).sum() >= 0.9 * mask.sum()


def test_unknown_object_names_list_the_valid_ones():
    env = make_env(EnvConfig(id="dmc:cartpole-balance", image_size=32, render_quality="fast"), seed=0)
    env.reset()
    with pytest.raises(ValueError, match="teacher.objects: 'wheel'.*pole_1"):
        env.object_mask(["wheel"])


def test_sim_teacher_map_is_the_downsampled_mask():
    env = make_env(EnvConfig(id="dmc:cartpole-balance", image_size=64, render_quality="fast"), seed=0)
    step = env.reset()
    teacher = make_teacher(
        TeacherConfig(kind="sim", objects=["cart", "pole_1"], map_size=16), "dmc:cartpole-balance", CPU
    )
    knowledge = teacher.annotate(env, step.frame)
    assert knowledge.shape == (16, 16) and knowledge.dtype == np.uint8
    expected = downsample_mask(env.object_mask(["cart", "pole_1"]), 16)
    np.testing.assert_array_equal(knowledge, expected)
    assert knowledge.max() > 100 and knowledge.min() == 0


def test_downsample_mask_averages_blocks():
    mask = np.zeros((8, 8), bool)
    mask[:4, :4] = True
    mask[4, 4] = True
    small = downsample_mask(mask, 2)
    assert small.tolist() == [[255, 0], [0, 16]]


def test_car_racing_masks_road_and_car():
    env = make_env(EnvConfig(id="gym:CarRacing-v3", image_size=96, action_repeat=1), seed=0)
    env.reset()
    for _ in range(60):  # past the zoom-in animation
        env.step(np.zeros(3))
    car = env.object_mask(["car"])
    road = env.object_mask(["road"])
    rows, cols = np.nonzero(car)
    assert 20 < car.sum() < 400
    assert 55 < rows.mean() < 80 and 40 < cols.mean() < 56  # the car sits centre-bottom
    assert road.sum() > 500 and not (road & car).any()
    assert not (road | car)[-12:].any()  # the instrument bar is never an object


def test_none_teacher_is_the_ablation():
    assert make_teacher(TeacherConfig(kind="none"), "dmc:cartpole-balance", CPU) is None


def test_the_sim_foreground_is_everything_but_sky_and_floor_not_only_the_named_objects():
    env = make_env(EnvConfig(id="dmc:cartpole-balance", image_size=64, render_quality="fast"), seed=0)
    step = env.reset()
    teacher = make_teacher(
        TeacherConfig(kind="sim", objects=["pole_1"], map_size=16), "dmc:cartpole-balance", CPU
    )
    labels = teacher.label([Observation(teacher.capture(env, step.frame), 0)])
    foreground = labels.foreground[0]
    np.testing.assert_array_equal(foreground, ~env.background_mask())
    # More than the named objects: the cart, not named, is no background either.
    assert (foreground & ~env.object_mask(["pole_1"])).sum() > 20
    assert not (env.object_mask(["cart", "pole_1"]) & ~foreground).any()


def test_a_teacher_without_a_scene_gives_its_map_thresholded_as_the_foreground():
    maps = np.array([[[0, 255], [127, 128]]], np.uint8)
    np.testing.assert_array_equal(
        foreground_from_maps(maps, 4)[0],
        [
            [False, False, True, True],
            [False, False, True, True],
            [False, False, True, True],
            [False, False, True, True],
        ],
    )
