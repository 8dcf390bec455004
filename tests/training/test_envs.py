import numpy as np
import pytest

from training.config import EnvConfig
from training.envs import make_env


@pytest.fixture(scope="module")
def cartpole():
    env = make_env(
        EnvConfig(id="dmc:cartpole-balance", image_size=48, action_repeat=4, render_quality="fast"), 0
    )
    yield env
    env.close()


def test_pixels_stack_and_action_space(cartpole):
    step = cartpole.reset()
    assert step.frame.shape == (48, 48, 3) and step.frame.dtype == np.uint8
    assert step.stack.shape == (3, 48, 48, 3)
    assert (step.stack == step.frame).all()  # the first frame fills the stack
    assert cartpole.action_dim == 1
    nxt = cartpole.step(np.array([0.3]))
    np.testing.assert_array_equal(nxt.stack[-1], nxt.frame)
    np.testing.assert_array_equal(nxt.stack[-2], step.frame)


def test_action_repeat_sums_rewards_and_time_limit_truncates(cartpole):
    cartpole.reset()
    steps, last = 0, None
    while last is None or not last.last:
        last = cartpole.step(np.zeros(1))
        steps += 1
        assert 0.0 <= last.reward <= 4.0
    assert steps == 1000 // 4
    assert not last.terminal  # a time limit is not a terminal state


def test_same_seed_same_frames():
    config = EnvConfig(id="dmc:reacher-easy", image_size=32, render_quality="fast")
    a, b = make_env(config, 3), make_env(config, 3)
    np.testing.assert_array_equal(a.reset().frame, b.reset().frame)
    np.testing.assert_array_equal(a.step(np.array([0.5, -0.5])).frame, b.step(np.array([0.5, -0.5])).frame)


def test_fast_render_quality_changes_pixels_not_physics():
    frames = {}
    for quality in ("default", "fast"):
        env = make_env(EnvConfig(id="dmc:cartpole-balance", image_size=64, render_quality=quality), 0)
        env.reset()
        frames[quality] = env.step(np.array([0.5])).frame
        assert env.physics.data.qpos is not None
    assert (frames["default"] != frames["fast"]).any()


def test_actions_are_in_the_env_bounds_and_the_agent_unit_meets_them_in_from_unit():
    env = make_env(EnvConfig(id="gym:CarRacing-v3", image_size=64, action_repeat=2), 0)
    step = env.reset()
    assert step.frame.shape == (64, 64, 3)
    np.testing.assert_allclose(env.action_low, [-1, 0, 0])
    np.testing.assert_allclose(env.action_high, [1, 1, 1])
    wheels = env._env.unwrapped.car.wheels
    env.step(np.array([0.0, 0.0, 0.25]))  # brake 0.25, as a policy file gives it: applied as it is
    assert [w.brake for w in wheels] == [0.25] * 4
    env.step(np.array([0.0, 0.0, 3.0]))  # past the bound: clipped to it
    assert [w.brake for w in wheels] == [1.0] * 4
    # The agent's [-1, 1] onto the bounds: -1 is the lower bound, 1 the upper; beyond them, clipped.
    np.testing.assert_allclose(env.from_unit(np.array([0.0, -1.0, 1.0])), [0.0, 0.0, 1.0])
    np.testing.assert_allclose(env.from_unit(np.array([-2.0, 0.0, -0.5])), [-1.0, 0.5, 0.25])
    env.close()


@pytest.mark.parametrize("bad", ["cartpole-balance", "dmc:cartpole-fly", "gym:NoSuchEnv-v0"])
def test_bad_env_ids_name_the_field(bad):
    with pytest.raises(ValueError, match="env.id"):
        make_env(EnvConfig(id=bad), 0)
